"""Several models for the llm proposer: `--model` more than once, SELFLOOP_LLM_MODEL, `[llm] model`
as a list; each reaches the proposer's bandit. No evolve run: the command stops where it would build."""

from __future__ import annotations

import random

import pytest
from click.testing import CliRunner
from selfloop.core import evolve_cli
from selfloop.core.config import LLMSettings, load_config
from selfloop.core.registry import load_registry
from selfloop.core.types import VariantView
from selfloop.plugins.propose.model_bandit import ModelBandit


class Built(Exception):
    pass


@pytest.fixture
def built(monkeypatch):
    """Run `selfloop evolve` up to building the evolution; return the proposer it would use."""
    seen = {}

    def build(config, registry, *args, **kwargs):
        seen["config"] = config
        seen["proposer"] = registry.create("proposer", config.proposer.name, evolve_cli.proposer_options(config))
        raise Built()

    monkeypatch.setattr(evolve_cli, "build_evolution", build)
    monkeypatch.delenv("SELFLOOP_LLM_MODEL", raising=False)

    def run(*args, env=None):
        result = CliRunner().invoke(evolve_cli.evolve, [*map(str, args)], env=env)
        assert isinstance(result.exception, Built), result.output
        return seen["proposer"], seen["config"]

    return run


def test_two_model_options_reach_the_proposer(built, tmp_path):
    proposer, config = built("--model", "openai/gpt-4o-mini", "--model", "anthropic/claude-3-5-haiku-latest",
                             "--archive", tmp_path / "A")
    assert config.proposer.name == "llm"
    assert config.llm.model == ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest"]
    assert proposer.models == ["openai/gpt-4o-mini", "anthropic/claude-3-5-haiku-latest"]
    assert proposer.bandit.models == proposer.models


def test_one_model_option_is_one_string(built, tmp_path):
    proposer, config = built("--model", "openai/gpt-4o-mini", "--archive", tmp_path / "A")
    assert config.llm.model == "openai/gpt-4o-mini" and proposer.models == ["openai/gpt-4o-mini"]


def test_models_from_the_environment(built, tmp_path):
    proposer, _ = built("--archive", tmp_path / "A",
                        env={"SELFLOOP_LLM_MODEL": "openai/gpt-4o-mini openai/gpt-4o"})
    assert proposer.models == ["openai/gpt-4o-mini", "openai/gpt-4o"]


def test_models_from_the_config_as_a_list(built, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('[llm]\nmodel = ["openai/gpt-4o-mini", "ollama_chat/llama3.1"]\napi_base = "http://127.0.0.1:9/v1"\n')
    proposer, _ = built("--config", config, "--archive", tmp_path / "A")
    assert proposer.models == ["openai/gpt-4o-mini", "ollama_chat/llama3.1"]
    assert proposer.llm_options["api_base"] == "http://127.0.0.1:9/v1"
    # --model replaces the config's models
    proposer, _ = built("--config", config, "--model", "openai/gpt-4o", "--archive", tmp_path / "A")
    assert proposer.models == ["openai/gpt-4o"]


def test_settings_normalize_the_models(monkeypatch):
    monkeypatch.setenv("SELFLOOP_LLM_MODEL", "openai/a, openai/b")
    assert LLMSettings().model == ["openai/a", "openai/b"] and LLMSettings().models == ["openai/a", "openai/b"]
    assert LLMSettings(model=["openai/a"]).model == "openai/a"
    assert LLMSettings(model=["openai/a", "openai/a"]).model == "openai/a"
    assert LLMSettings(model=[]).model is None and LLMSettings(model=[]).models == []
    monkeypatch.delenv("SELFLOOP_LLM_MODEL")
    assert load_config(None).llm.model is None


def test_a_bad_second_model_is_a_one_line_error(run_selfloop, tmp_path):
    result = run_selfloop("evolve", "--model", "openai/gpt-4o-mini", "--model", "nosuch/x",
                          "--archive", tmp_path / "A")
    assert result.returncode == 1 and result.stderr.strip().startswith("error:")
    assert "unknown provider 'nosuch'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "A").exists()


def view(i, model, gain, status="admitted"):
    return VariantView(id=f"v{i}", files={}, scores={"smoke": 0.5 + gain}, parent="v0", operator=f"llm:{model}",
                       status=status)


PARENT = VariantView(id="v0", files={}, scores={"smoke": 0.5})


def test_bandit_learns_from_views_and_prefers_the_better_model():
    bandit = ModelBandit(["openai/a", "openai/b"])
    rng = random.Random(0)
    assert {bandit.choose(rng), bandit.choose(rng)} == {"openai/a", "openai/b"}  # each tried first
    others = [view(1, "openai/a", 0.0), view(2, "openai/b", 0.3), view(3, "openai/a", -0.2),
              view(4, "openai/b", 0.1, status="rejected"), view(5, "mutation", 0.4)]
    bandit.observe(PARENT, others)
    bandit.observe(PARENT, others)  # each variant counts once
    state = bandit.state()["arms"]
    assert state["openai/a"]["outcomes"] == 2 and state["openai/a"]["mean_gain"] == 0.0  # a regression is 0
    assert state["openai/b"]["outcomes"] == 2 and state["openai/b"]["mean_gain"] == pytest.approx(0.15)
    picks = [bandit.choose(rng) for _ in range(10)]
    assert picks.count("openai/b") >= 8


def test_bandit_is_deterministic_under_the_rng():
    def picks(seed):
        bandit = ModelBandit(["openai/a", "openai/b", "openai/c"])
        return [bandit.choose(random.Random(seed)) for _ in range(3)]
    assert picks(1) == picks(1) and sorted(picks(1)) == ["openai/a", "openai/b", "openai/c"]


def test_a_child_whose_parent_is_out_of_view_waits():
    bandit = ModelBandit(["openai/a"])
    orphan = VariantView(id="v9", files={}, scores={"smoke": 0.9}, parent="v8", operator="llm:openai/a")
    bandit.observe(PARENT, [orphan])
    assert bandit.state()["arms"]["openai/a"]["outcomes"] == 0
    bandit.observe(PARENT, [orphan, VariantView(id="v8", files={}, scores={"smoke": 0.6})])
    assert bandit.state()["arms"]["openai/a"]["mean_gain"] == pytest.approx(0.3)


def test_registry_builds_with_a_list_of_models():
    p = load_registry(entry_points=False).create("proposer", "llm", {"model": ["openai/gpt-4o-mini", "openai/gpt-4o"]})
    assert p.models == ["openai/gpt-4o-mini", "openai/gpt-4o"] and p.insights_model == "openai/gpt-4o-mini"
