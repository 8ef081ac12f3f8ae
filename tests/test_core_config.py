"""Run configs: the default, merging, and clear errors for every kind of bad input."""

import json
import tomllib

import pytest
from selfloop.core.config import load_config, to_toml
from selfloop.core.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "run.toml"
    path.write_text(text)
    return path


def test_default_config_is_valid():
    config = load_config()
    assert config.task.name == "reversed_addition"
    assert config.select, "the default selects its data"


def test_user_config_merges_over_default(tmp_path):
    config = load_config(write(tmp_path, 'seed = 7\n[task.options]\nmin_difficulty = 2\n'))
    assert config.seed == 7
    assert config.task.name == "reversed_addition"
    assert config.task.options == {"min_difficulty": 2}
    assert config.generator.name == load_config().generator.name


def test_new_component_name_replaces_its_options(tmp_path):
    base = load_config(write(tmp_path, '[refiner]\nname = "x"\noptions = {k = 3}\n'))
    assert base.refiner.options == {"k": 3}
    other = tmp_path / "other.toml"
    other.write_text('[refiner]\nname = "y"\n')
    assert load_config(other).refiner.options == {}


def test_unknown_key_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"run\.toml: sead: Extra inputs are not permitted"):
        load_config(write(tmp_path, "sead = 1\n"))


def test_wrong_type_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"sandbox\.timeout_s"):
        load_config(write(tmp_path, '[sandbox]\ntimeout_s = "soon"\n'))


def test_malformed_toml_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[task\nname = 1\n"))


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.toml")


def test_unknown_component_lists_valid_names(tmp_path):
    from selfloop.core.registry import load_registry

    config = load_config(write(tmp_path, '[rewarder]\nname = "oracle"\n'))
    with pytest.raises(ConfigError, match=r"\[rewarder\] unknown rewarder 'oracle'; valid rewarder names: .*ground_truth"):
        config.check_names(load_registry())


def test_toml_round_trip():
    config = load_config()
    text = to_toml(config.model_dump(mode="json"))
    assert load_config().model_dump() == type(config).model_validate(tomllib.loads(text)).model_dump()


def test_cli_config_show_json(run_selfloop, tmp_path):
    proc = run_selfloop("config", "show", "--json", "--config", write(tmp_path, "seed = 3\n"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["seed"] == 3


def test_cli_bad_config_is_one_line(run_selfloop, tmp_path):
    proc = run_selfloop("config", "show", "--config", write(tmp_path, "[task\n"))
    assert proc.returncode == 1
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "not valid TOML" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_option_lists_the_factorys_options(tmp_path):
    from selfloop.core.registry import load_registry

    config = load_config(write(tmp_path, '[refiner]\nname = "self_consistency"\noptions = { k = 7 }\n'))
    with pytest.raises(ConfigError, match=r"^\[refiner\] refiner 'self_consistency' .*takes no option 'k'; "
                                          r"valid options: samples, temperature, include_greedy"):
        config.check_names(load_registry())


def test_misspelled_option_suggests_the_close_one_and_every_problem_is_named(tmp_path):
    from selfloop.core.registry import load_registry

    config = load_config(write(tmp_path, '[refiner]\nname = "self_consistency"\noptions = { sample = 7 }\n'
                                         '[evolve.refiner]\nname = "greedy"\noptions = { votes = 1 }\n'))
    with pytest.raises(ConfigError) as caught:
        config.check_names(load_registry())
    message = str(caught.value)
    assert "takes no option 'sample' (did you mean 'samples'?)" in message
    assert "[evolve.refiner] refiner 'greedy'" in message and "takes no option 'votes'" in message


def test_options_of_a_factory_taking_any_keyword_are_not_checked():
    from selfloop.core.registry import Registration

    def factory(**options):
        return options

    Registration("refiner", "any", factory, "p", "directory", "x.py").check_options({"k": 7})
    strict = Registration("refiner", "one", lambda samples=1: None, "p", "directory", "x.py")
    assert strict.option_names() == ["samples"]
    with pytest.raises(ConfigError, match="takes no option 'k'; valid options: samples"):
        strict.check_options({"k": 7})


@pytest.mark.parametrize("command", [["config", "show"], ["run", "--rounds", "0"], ["evolve", "--iterations", "0"]])
def test_cli_rejects_unknown_option_before_any_work(run_selfloop, tmp_path, command):
    config = write(tmp_path, '[refiner]\nname = "self_consistency"\noptions = { k = 7 }\n')
    out = ["--out", tmp_path / "out"] if command[0] == "run" else (
        ["--archive", tmp_path / "A"] if command[0] == "evolve" else [])
    proc = run_selfloop(*command, "--config", config, *out)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "takes no option 'k'; valid options: samples" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.toml"]  # nothing written


def test_probes_judge_every_kind_that_shapes_training_selectors_included():
    from selfloop.core.config import EvolveSettings

    assert not EvolveSettings(targets=["refiner"]).probed
    assert EvolveSettings(targets=["refiner", "selector"]).probed  # the default run: labels != model
    assert EvolveSettings(targets=["optimizer"]).probed
    assert not EvolveSettings(targets=["refiner", "selector"], probe={"enabled": False}).probed
    assert EvolveSettings(targets=["refiner"], probe={"enabled": True}).probed
    with pytest.raises(ValueError, match="only a training probe judges"):
        EvolveSettings(targets=["optimizer"], probe={"enabled": False})
