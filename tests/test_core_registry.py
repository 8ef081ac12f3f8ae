"""Discovery: built-ins, entry points, plugin directories, and every way a plugin can be wrong."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from selfloop.core import hookspecs
from selfloop.core.errors import ConfigError, PluginError
from selfloop.core.kinds import KINDS
from selfloop.core.registry import load_registry

# A minimal valid component of every kind, as plugin source. Each test plugin is a real file.
MINIMAL = {
    "model": "def create(self): return None\n"
             "def load(self, directory): return None",
    "task": "def problems(self, difficulty, count, rng): return []\n"
            "def verify(self, problem, completion): return True",
    "acquirer": "def acquire(self, *, task, policy, generator, round_index, rng): return []",
    "selector": "def select(self, examples, *, task, policy, generator, round_index, rng, history=()): return None",
    "generator": "def generate(self, policy, prompts, *, n, temperature, max_new_tokens, seed): return []",
    "rewarder": "def reward(self, problems, completions, *, task): return []",
    "optimizer": "def optimize(self, policy, examples, *, task, generator, rewarder, rng, workdir,\n"
                 "             round_index=0): return None",
    "refiner": "def refine(self, policy, problems, *, generator, rewarder, seed): return []",
    "evaluator": "def evaluate(self, policy, **kwargs): return None",
    "proposer": "def propose(self, parent, *, editable, others, rng): return None",
    "parent_selector": "def choose(self, variants, k, rng): return []",
}


def plugin_source(kind: str, name: str, body: str | None = None) -> str:
    body = textwrap.indent(body or MINIMAL[kind], "    ")
    return (
        "from selfloop.core.hookspecs import hookimpl\n\n"
        f"class Component:\n{body}\n\n"
        f"@hookimpl\ndef register_{kind}(register):\n"
        f"    register({name!r}, Component, description='test {kind}')\n"
    )


def write(directory: Path, filename: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def no_entry_point_plugins(monkeypatch):
    monkeypatch.setenv("SELFLOOP_LOAD_PLUGINS", "")


def test_every_hook_is_documented():
    for kind in KINDS:
        spec = getattr(hookspecs, f"register_{kind}")
        assert spec.__doc__ and len(spec.__doc__.strip()) > 20, kind


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_hook_registers_a_component(tmp_path, kind):
    write(tmp_path, f"my_{kind}.py", plugin_source(kind, f"my_{kind}"))
    registry = load_registry([tmp_path], builtins=False)
    reg = registry.get(kind, f"my_{kind}")
    assert reg.source == "directory"
    assert reg.location.endswith(f"my_{kind}.py")
    assert registry.create(kind, f"my_{kind}") is not None


def test_builtins_are_registered_like_plugins():
    registry = load_registry()
    reg = registry.get("task", "reversed_addition")
    assert reg.source == "builtin"
    assert reg.plugin.startswith("selfloop.plugins.")
    assert Path(reg.location).name == "reversed_addition.py"


def test_unknown_name_lists_valid_names():
    registry = load_registry()
    with pytest.raises(ConfigError, match=r"unknown task 'nope'; valid task names: .*reversed_addition"):
        registry.get("task", "nope")


def test_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "broken.py", "def register_task(register:\n")
    with pytest.raises(PluginError) as err:
        load_registry([tmp_path])
    assert str(path) in str(err.value) and "syntax error" in str(err.value)


def test_import_error_names_file(tmp_path):
    path = write(tmp_path, "needs_missing.py", "import selfloop_no_such_module\n")
    with pytest.raises(PluginError, match="ModuleNotFoundError") as err:
        load_registry([tmp_path])
    assert str(path) in str(err.value)


def test_duplicate_name_names_both_plugins(tmp_path):
    write(tmp_path, "first.py", plugin_source("refiner", "twin"))
    second = write(tmp_path, "second.py", plugin_source("refiner", "twin"))
    with pytest.raises(PluginError, match="duplicate refiner name 'twin'") as err:
        load_registry([tmp_path])
    message = str(err.value)
    assert str(second) in message and "first" in message


def test_duplicate_of_a_builtin_is_refused(tmp_path):
    write(tmp_path, "shadow.py", plugin_source("task", "reversed_addition"))
    with pytest.raises(PluginError, match="already registered by plugin selfloop.plugins"):
        load_registry([tmp_path])


def test_component_missing_a_method_is_refused(tmp_path):
    write(tmp_path, "half.py", plugin_source("task", "half", "def problems(self, difficulty, count, rng): return []"))
    with pytest.raises(PluginError, match=r"half\.py.*not a valid task.*has no method verify\(\)"):
        load_registry([tmp_path])


def test_component_missing_a_keyword_is_refused(tmp_path):
    body = "def refine(self, policy, problems, *, generator): return []"
    write(tmp_path, "narrow.py", plugin_source("refiner", "narrow", body))
    with pytest.raises(PluginError, match="lacks keyword parameter 'rewarder'"):
        load_registry([tmp_path])


def test_factory_function_is_checked_when_built(tmp_path):
    write(tmp_path, "factory.py", textwrap.dedent("""\
        from selfloop.core.hookspecs import hookimpl

        class NotARefiner:
            pass

        def make(**options):
            return NotARefiner()

        @hookimpl
        def register_refiner(register):
            register("lazy", make)
        """))
    registry = load_registry([tmp_path])
    with pytest.raises(PluginError, match="not a valid refiner"):
        registry.create("refiner", "lazy")


def test_bad_options_are_a_config_error(tmp_path):
    write(tmp_path, "opts.py", plugin_source("parent_selector", "opts"))
    registry = load_registry([tmp_path])
    with pytest.raises(ConfigError, match="bad options"):
        registry.create("parent_selector", "opts", {"no_such_option": 1})


def test_misspelled_hook_fails_loudly(tmp_path):
    write(tmp_path, "typo.py", textwrap.dedent("""\
        from selfloop.core.hookspecs import hookimpl

        @hookimpl
        def register_taks(register):
            pass
        """))
    with pytest.raises(PluginError, match="register_taks"):
        load_registry([tmp_path])


def test_register_hook_that_raises_names_the_plugin(tmp_path):
    write(tmp_path, "angry.py", textwrap.dedent("""\
        from selfloop.core.hookspecs import hookimpl

        @hookimpl
        def register_selector(register):
            raise RuntimeError("no config file")
        """))
    with pytest.raises(PluginError, match=r"angry\.py.*register_selector raised RuntimeError: no config file"):
        load_registry([tmp_path])


def test_package_directory_may_use_relative_imports(tmp_path):
    pkg = tmp_path / "mypkg"
    write(pkg, "__init__.py", "")
    write(pkg, "shared.py", "ANSWER = '42'\n")
    write(pkg, "uses_shared.py", "from .shared import ANSWER\n" + plugin_source(
        "task", "answers", "def problems(self, difficulty, count, rng): return []\n"
        "def verify(self, problem, completion): return completion == ANSWER",
    ))
    registry = load_registry([pkg])
    assert registry.create("task", "answers").verify(None, "42")


def test_copy_of_builtin_surface_replaces_the_builtins(tmp_path):
    import shutil

    import selfloop.plugins

    variant = tmp_path / "variant"
    shutil.copytree(Path(selfloop.plugins.__file__).parent, variant,
                    ignore=shutil.ignore_patterns("__pycache__"))
    task_file = variant / "tasks" / "reversed_addition.py"
    task_file.write_text(task_file.read_text().replace(
        'description="reversed', 'description="EVOLVED reversed'))
    registry = load_registry([variant])
    reg = registry.get("task", "reversed_addition")
    assert reg.source == "directory"
    assert reg.description.startswith("EVOLVED")
    assert Path(reg.location).is_relative_to(variant)


@pytest.mark.parametrize("init, surface", [
    ('SURFACE = "selfloop.plugins"\n', True),
    ('"""Plugins."""\n\nSURFACE = "selfloop.plugins"  # a variant\n', True),
    ('# not a SURFACE: only mentioned\n', False),
    ('SURFACE = "somewhere.else"\n', False),
    ('def f():\n    SURFACE = "selfloop.plugins"\n', False),  # not at module level
    (None, False),
])
def test_a_surface_variant_is_one_that_assigns_the_marker(tmp_path, init, surface):
    from selfloop.core.registry import is_surface

    if init is not None:
        write(tmp_path, "__init__.py", init)
    assert is_surface(tmp_path) is surface
    assert is_surface(Path(__file__).resolve().parent.parent / "plugins")


# --- entry points: a real installed distribution, discovered by importlib.metadata -------------

def make_distribution(site: Path, dist: str, module: str, kind: str, name: str) -> None:
    """Install a tiny distribution into ``site`` the way pip lays one out (dist-info + module)."""
    write(site, f"{module}.py", plugin_source(kind, name))
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    write(info, "METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    write(info, "entry_points.txt", f"[selfloop]\n{module} = {module}\n")
    write(info, "RECORD", "")


@pytest.fixture
def site(tmp_path):
    site = tmp_path / "site"
    make_distribution(site, "selfloop-test-alpha", "alpha_plugin", "refiner", "alpha")
    make_distribution(site, "selfloop-test-beta", "beta_plugin", "selector", "beta")
    return site


def names_listed(run_selfloop, site, load_plugins):
    proc = run_selfloop("plugins", "--json", env={"PYTHONPATH": str(site), "SELFLOOP_LOAD_PLUGINS": load_plugins})
    return proc, (json.loads(proc.stdout) if proc.returncode == 0 else None)


def test_entry_points_all_loaded_when_unset(run_selfloop, site):
    proc, rows = names_listed(run_selfloop, site, None)
    assert proc.returncode == 0, proc.stderr
    mine = {r["name"]: r for r in rows if r["source"] == "entrypoint"}
    assert set(mine) == {"alpha", "beta"}
    assert mine["alpha"]["plugin"] == "alpha_plugin" and mine["alpha"]["kind"] == "refiner"


def test_entry_points_none_loaded_when_empty(run_selfloop, site):
    _, rows = names_listed(run_selfloop, site, "")
    assert not [r for r in rows if r["source"] == "entrypoint"]


def test_entry_points_limited_to_named_distributions(run_selfloop, site):
    _, rows = names_listed(run_selfloop, site, "selfloop_test_beta")
    assert [r["name"] for r in rows if r["source"] == "entrypoint"] == ["beta"]


def test_entry_points_unknown_distribution_is_an_error(run_selfloop, site):
    proc, _ = names_listed(run_selfloop, site, "selfloop-test-gamma")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "selfloop-test-gamma" in proc.stderr and "selfloop-test-alpha" in proc.stderr


# --- the CLI turns plugin errors into one line ---------------------------------------------------

@pytest.mark.parametrize("case", ["syntax", "duplicate"])
def test_cli_plugin_errors_are_one_line(run_selfloop, tmp_path, case):
    plugins = tmp_path / "plugins"
    if case == "syntax":
        bad = write(plugins, "bad.py", "def register_task(:\n")
    else:
        write(plugins, "a.py", plugin_source("task", "same"))
        bad = write(plugins, "b.py", plugin_source("task", "same"))
    proc = run_selfloop("plugins", "--json", "--plugins-dir", plugins)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(bad) in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


# --- options: declared once, by the factory ----------------------------------------------------

TUNED = '''
from selfloop.core.hookspecs import hookimpl
from selfloop.core.tunable import tunable

VOTES = tunable(5, low=1, high=9)
STYLE = tunable("plain", choices=("plain", "fancy"))


class Voter:
    def __init__(self, votes: int = VOTES, style: str = STYLE, label: str | None = None, *, limit: int):
        self.votes = votes

    def refine(self, policy, problems, *, generator, rewarder, seed):
        return []


@hookimpl
def register_refiner(register):
    register("voter", Voter)
'''


def test_options_come_from_the_signature_with_their_tunables(tmp_path):
    write(tmp_path, "voter.py", TUNED)
    options = {o.name: o for o in load_registry([tmp_path]).get("refiner", "voter").options()}
    assert list(options) == ["votes", "style", "label", "limit"]
    assert (options["votes"].type, options["votes"].default) == ("int", 5)
    assert (options["votes"].tunable.low, options["votes"].tunable.high) == (1, 9)
    assert options["style"].tunable.choices == ("plain", "fancy")
    assert options["label"].type == "str | None" and options["label"].tunable is None
    assert options["limit"].to_dict()["required"] is True


def test_a_factory_taking_keyword_options_declares_them_by_its_options_model(tmp_path):
    write(tmp_path, "settled.py", '''
from pydantic import BaseModel
from selfloop.core.hookspecs import hookimpl


class Settings(BaseModel):
    width: int = 3
    path: str


class Settled:
    OPTIONS = Settings

    def __init__(self, **options):
        self.settings = Settings(**options)

    def refine(self, policy, problems, *, generator, rewarder, seed):
        return []


@hookimpl
def register_refiner(register):
    register("settled", Settled)
''')
    reg = load_registry([tmp_path]).get("refiner", "settled")
    assert [(o.name, o.type, o.to_dict()["required"]) for o in reg.options()] == [
        ("width", "int", False), ("path", "str", True)]
    with pytest.raises(ConfigError, match="takes no option 'widht'.*did you mean 'width'"):
        reg.check_options({"widht": 4})


def test_every_builtin_tunable_is_the_default_of_the_option_it_is_named_after():
    """One declaration per option: a module-level tunable no option's default is (or one whose
    value the signature writes again) would be a second declaration that drifts."""
    import inspect

    from selfloop.core.tunable import find_tunables

    by_file: dict[str, list] = {}
    for reg in load_registry(entry_points=False).all():
        by_file.setdefault(inspect.getsourcefile(reg.factory), []).append(reg)
    for path, regs in by_file.items():
        linked = {o.tunable.name for reg in regs for o in reg.options() or [] if o.tunable}
        declared = {t.name for t in find_tunables(Path(path).read_text())}
        assert declared <= linked, f"{path}: {sorted(declared - linked)} are no option's default"


def test_plugins_options_lists_types_defaults_and_bounds(run_selfloop, tmp_path):
    write(tmp_path / "p", "voter.py", TUNED)
    result = run_selfloop("plugins", "--options", "--plugins-dir", tmp_path / "p")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["kind", "name", "option", "type", "default", "tunable"]
    assert ["refiner", "voter", "votes", "int", "5", "yes:", "[1,", "9]"] in [line.split() for line in lines]
    assert any(line.split()[:5] == ["refiner", "voter", "limit", "int", "(required)"] for line in lines)
    rows = json.loads(run_selfloop("plugins", "--options", "--json", "--plugins-dir", tmp_path / "p").stdout)
    voter = next(r for r in rows if r["name"] == "voter")
    assert voter["options"][0] == {"name": "votes", "type": "int", "required": False, "default": 5,
                                   "tunable": {"name": "VOTES", "low": 1, "high": 9, "choices": None}}


# --- plugins extend the command line -----------------------------------------------------------

COMMAND = '''
import click
from selfloop.core.hookspecs import hookimpl


@hookimpl
def register_commands(cli):
    @cli.command("hello")
    @click.argument("name")
    def hello(name):
        """Say hello (a plugin's command)."""
        click.echo(f"hello {name}")
'''


def test_a_plugin_command_is_listed_in_help_and_runs(run_selfloop, tmp_path):
    write(tmp_path / "p", "hello.py", COMMAND)
    env = {"SELFLOOP_PLUGINS_DIR": str(tmp_path / "p")}
    helped = run_selfloop("--help", env=env)
    assert helped.returncode == 0
    assert ["hello", "Say", "hello", "(a", "plugin's", "command)."] in [line.split() for line in helped.stdout.splitlines()]
    ran = run_selfloop("hello", "world", env=env)
    assert ran.returncode == 0 and ran.stdout == "hello world\n", ran.stderr
    broken = run_selfloop("--help", env={"SELFLOOP_PLUGINS_DIR": str(tmp_path / "nowhere")})
    assert broken.returncode == 0 and "run " in broken.stdout  # a broken plugin never breaks --help
    assert "plugin commands not loaded" in broken.stderr
