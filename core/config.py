"""The run config: one TOML file naming a component per stage, with its options.

Each section below belongs to one part of selfloop; a section's fields are that part's settings.
An unknown key anywhere is an error, so a misspelling never silently falls back to a default.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError

DEFAULT_CONFIG = "default.toml"
# What evolve may target, by how an edit is judged: by the answers and kept examples the variant
# gives on held-out problems (selfloop.core.judge), or by the model a short training round with the
# variant's pipeline trains (the training probe, selfloop.core.probe). "pipeline" is the lifecycle's
# composition (which components run, in which order, with which options: ``pipeline.toml``).
# The meta-agent's own parts (the proposer, the parent selector) are judged by what their
# descendants achieve: their clades (selfloop.core.clades).
# Selectors are judged both ways: what they keep of the judge's self-labels (cheap), and what the
# data they keep trains (when probes are on).
ANSWER_KINDS = ("refiner", "selector", "generator")
PROBE_KINDS = ("acquirer", "selector", "rewarder", "optimizer", "pipeline")
META_KINDS = ("proposer", "parent_selector")
MEASURED_KINDS = ANSWER_KINDS + PROBE_KINDS + META_KINDS


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Component(Strict):
    """One component: a registered name and the options its factory takes."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class ModelComponent(Component):
    """The model provider (``[model]``): ``embedded`` (a tiny model from scratch, the default) or
    ``pretrained`` (a local Hugging Face directory), with its options.

    Fields written directly under ``[model]`` (the layout before providers) are the options of
    ``embedded``: ``[model] n_layer = 2`` reads as ``name = "embedded", options = {n_layer = 2}``.
    """

    name: str = "embedded"

    @model_validator(mode="before")
    @classmethod
    def _flat_fields_are_options(cls, data):
        if isinstance(data, dict):
            loose = {k: v for k, v in data.items() if k not in ("name", "options")}
            if loose:
                data = {"name": data.get("name", "embedded"),
                        "options": {**data.get("options", {}), **loose}}
        return data


class LifecycleSettings(Strict):
    """The closed loop: round 0 trains the base model on labelled data, then ``rounds`` rounds of
    self-improvement follow."""

    rounds: int = Field(4, ge=0)
    out: str = "runs/lifecycle"
    max_seconds: float | None = Field(None, gt=0)  # start no new round after this much wall-clock
    keep_checkpoints: bool = True  # keep every round's model directory (else only the last admitted)
    plot: bool = True
    threads: int | None = Field(None, ge=1)  # torch CPU threads (None: torch's default)
    # The round admission gate (core/admission.py): a round whose held-out accuracy drops beyond a
    # confidence margin at a difficulty already trained on is rejected. 1000 problems per
    # difficulty resolve a 1-point drop from 100% or a 5-point one from 60% (200 missed a
    # 10-point drop at 60%); see core/admission.py for the sizes and their cost.
    admission: bool = True
    admission_per_difficulty: int = Field(1000, ge=10)
    admission_alpha: float = Field(0.05, gt=0, lt=1)  # chance of rejecting a round that changed nothing
    # What the gate measures the checkpoints with: the model's own greedy answers by default, not the
    # run's refiner (which may sample k times, and which evolve may have rewritten).
    admission_refiner: str = "greedy"


class RaySettings(Strict):
    """The ``ray`` executor (``selfloop.core.ray_executor``): where the cluster is, what a task asks.

    ``address``: ``"auto"`` or ``host:port`` of a running cluster; unset, one of this machine alone
    (``local_cpus`` CPUs, default all) is started for the run. Each evaluation asks for ``cpus``,
    ``memory_mb`` and ``gpus``; it is killed ``grace_s`` after the sandbox's own timeout.
    """

    address: str | None = None
    local_cpus: int | None = Field(None, ge=1)
    cpus: float = Field(1.0, gt=0)
    memory_mb: int | None = Field(None, ge=64)
    gpus: float = Field(0.0, ge=0)
    grace_s: float = Field(120.0, gt=0)


class ProbeSettings(Strict):
    """The training probe that judges edits of the stages that shape training.

    From the round's checkpoint the variant's pipeline trains one short self-improvement round in
    the sandbox (``steps`` optimizer steps, ``label_problems`` problems per difficulty acquired;
    the seed pipeline gets the same budget and seed), its weights come back through an output
    directory of at most ``output_mb``, and the host scores that model's greedy answers on
    ``per_difficulty`` held-out problems per difficulty at the checkpoint's frontier. A variant
    whose short probe reaches its parent's runs again with ``long_steps``, and that score is its
    score.
    """

    # "auto": probes run when the targets name a kind that shapes training (selector, acquirer,
    # rewarder, optimizer, pipeline): a selector's labels are not the model they train. true /
    # false: always / never (false leaves selector edits judged by their labels alone).
    enabled: bool | Literal["auto"] = "auto"
    steps: int = Field(40, ge=1)
    long_steps: int = Field(120, ge=1)
    label_problems: int = Field(200, ge=1)
    per_difficulty: int = Field(64, ge=8)
    output_mb: int = Field(64, ge=1)


class EvolveSettings(Strict):
    """The meta loop: rounds, budgets, workers, the staged evaluation and admission.

    ``rounds`` training rounds of the lifecycle interleave with evolution: ``iterations`` (the total)
    are split evenly across them. Sizes are problems per difficulty (refinement) or per pool
    (selection); the held-out ones are drawn by the judge from the pinned task. ``refiner``
    replaces the run's refiner while evolving (the lifecycle's greedy default has nothing to tune).
    """

    iterations: int = Field(20, ge=0)
    rounds: int = Field(2, ge=1)
    workers: int = Field(1, ge=1)  # evaluations in flight at once, on any executor
    executor: Literal["local", "ray"] = "local"  # local: threads on this host; ray: a Ray cluster
    ray: RaySettings = Field(default_factory=RaySettings)
    max_seconds: float | None = Field(None, gt=0)
    max_tokens: int | None = Field(None, gt=0)
    max_usd: float | None = Field(None, gt=0)
    archive: str = "runs/archive"
    out: str | None = None  # the run directory (journal, checkpoints); default: "<archive>.run"
    targets: list[str] = Field(default_factory=lambda: ["refiner", "selector"])  # kinds it may edit
    refiner: Component | None = Field(default_factory=lambda: Component(name="self_consistency"))
    # None: the checkpoint's frontier (the easiest difficulty it has not solved, and the next ones)
    refine_difficulties: list[int] | None = None
    select_difficulty: int | None = Field(None, ge=1)
    smoke_per_difficulty: int = Field(16, ge=1)
    smoke_select: int = Field(32, ge=1)
    full_per_difficulty: int = Field(64, ge=1)
    full_select: int = Field(128, ge=1)
    held_out_per_difficulty: int = Field(128, ge=1)
    held_out_select: int = Field(256, ge=1)
    # The model-dependence ablation (random weights) asks again this many refinement problems per
    # difficulty, and selects among this many of the judge's probes.
    null_per_difficulty: int = Field(32, ge=1)
    null_probes: int = Field(64, ge=2)
    # The full evaluation runs only if smoke >= full_threshold x parent's smoke - smoke_margin.
    full_threshold: float = Field(0.8, ge=0)
    smoke_margin: float = Field(0.1, ge=0)  # smoke sets are small: leave room for their noise
    # The judge's tests (visible vs held-out, model dependence) flag a difference beyond this many
    # standard errors of its sampling noise (selfloop.core.significance).
    significance_z: float = Field(3.0, gt=0)
    novelty_attempts: int = Field(5, ge=1)  # proposals tried per iteration to get an unseen variant
    confirm: bool = True  # at the end, seed vs champion once more on fresh held-out problems
    # ... and, when the champion changed what training runs, the models one probe round with its
    # pipeline and with the seed's train ([evolve.probe] budget), scored on fresh problems
    confirm_trained: bool = True
    # A challenger replaces the round's incumbent (the seed, or the champion carried over) only when
    # it scores more than this above it: a few problems' worth, so noise crowns nobody.
    champion_margin: float = Field(0.005, ge=0)
    probe: ProbeSettings = Field(default_factory=ProbeSettings)


    @property
    def probed(self) -> bool:
        """Whether training probes judge this run's edits (``[evolve.probe] enabled``)."""
        enabled = self.probe.enabled
        return any(t in PROBE_KINDS for t in self.targets) if enabled == "auto" else bool(enabled)

    @model_validator(mode="after")
    def _probes_for_probe_only_kinds(self):
        only = set(PROBE_KINDS) - set(ANSWER_KINDS)
        if self.probe.enabled is False and only & set(self.targets):
            raise ValueError(f"[evolve.probe] enabled = false, but the targets name "
                             f"{', '.join(sorted(only & set(self.targets)))}, which only a training probe judges")
        return self

    @field_validator("targets")
    @classmethod
    def _measurable_targets(cls, targets):
        unmeasured = [t for t in targets if t not in MEASURED_KINDS]
        if unmeasured:
            raise ValueError(f"the judge cannot measure edits of {', '.join(map(repr, unmeasured))}; "
                             f"evolve may edit {', '.join(MEASURED_KINDS)}")
        if not targets:
            raise ValueError("no targets: name at least one kind evolve may edit")
        return targets


class SandboxSettings(Strict):
    """Where candidate code runs, and within which limits."""

    backend: Literal["auto", "docker", "process"] = "auto"
    image: str = "selfloop-sandbox:latest"
    timeout_s: float = Field(600, gt=0)
    memory_mb: int = Field(4096, ge=64)
    cpus: float = Field(2.0, gt=0)
    pids: int = Field(256, ge=8)
    scratch_mb: int = Field(512, ge=1)
    log_limit_bytes: int = Field(1_000_000, ge=1024)  # kept of each of stdout and stderr
    output_limit_bytes: int = Field(64_000_000, ge=1024)  # printing more kills the payload
    env: list[str] = Field(default_factory=list)  # host variables passed in, by name


class LLMSettings(Strict):
    """The language model behind LLM components (litellm ``provider/name``); none by default.

    ``model`` may name several (a list, or ``SELFLOOP_LLM_MODEL`` with commas or spaces between
    them): the llm proposer then chooses among them by gain per dollar. One reads as a string.
    """

    model: str | list[str] | None = Field(default_factory=lambda: os.environ.get("SELFLOOP_LLM_MODEL") or None,
                                          validate_default=True)
    api_base: str | None = Field(default_factory=lambda: os.environ.get("SELFLOOP_LLM_API_BASE") or None)
    temperature: float = 0.7
    max_tokens: int = 2048
    timeout_s: float = 120

    @field_validator("model", mode="after")
    @classmethod
    def _models(cls, value):
        names = value.replace(",", " ").split() if isinstance(value, str) else list(value or [])
        names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
        return None if not names else names[0] if len(names) == 1 else names

    @property
    def models(self) -> list[str]:
        """Every model named, in order (empty when none is)."""
        return [self.model] if isinstance(self.model, str) else list(self.model or [])


class RunConfig(Strict):
    """Everything one `selfloop run` or `selfloop evolve` needs."""

    seed: int = 0
    task: Component
    acquire: list[Component]
    select: list[Component]
    generator: Component
    rewarder: Component
    optimizer: Component
    refiner: Component
    evaluate: list[Component]
    proposer: Component
    parent_selector: Component
    model: ModelComponent = Field(default_factory=ModelComponent)
    lifecycle: LifecycleSettings = Field(default_factory=LifecycleSettings)
    evolve: EvolveSettings = Field(default_factory=EvolveSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)

    @field_validator("acquire", "select", "evaluate", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, dict) else value

    def components(self) -> list[tuple[str, str, Component]]:
        """Every (section, kind, component) the config names."""
        single = {
            "model": "model", "task": "task", "generator": "generator", "rewarder": "rewarder",
            "optimizer": "optimizer", "refiner": "refiner", "proposer": "proposer",
            "parent_selector": "parent_selector",
        }
        many = {"acquire": "acquirer", "select": "selector", "evaluate": "evaluator"}
        out = [(section, kind, getattr(self, section)) for section, kind in single.items()]
        out += [(section, kind, c) for section, kind in many.items() for c in getattr(self, section)]
        return out

    def check_names(self, registry) -> None:
        """Raise ConfigError if a component name is not registered or an option is not one its
        factory takes (the message lists the valid names); every problem is reported at once."""
        named = [(f"[{section}]", kind, component) for section, kind, component in self.components()]
        if self.evolve.refiner is not None:
            named.append(("[evolve.refiner]", "refiner", self.evolve.refiner))
        problems = []
        for where, kind, component in named:
            try:
                registry.get(kind, component.name).check_options(component.options)
            except ConfigError as exc:
                problems.append(f"{where} {exc}")
        if problems:
            raise ConfigError(" | ".join(problems))


def parse_options(settings_class: type[BaseModel], options: dict[str, Any], component: str):
    """``options`` validated by a component's pydantic ``settings_class``; the first problem is a
    one-line ConfigError naming ``component`` (say, "model 'embedded'") and the option."""
    try:
        return settings_class(**options)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "options"
        raise ConfigError(f"{component}: {where}: {first['msg']}") from None


def default_config_text() -> str:
    return resources.files("selfloop.core").joinpath(DEFAULT_CONFIG).read_text()


def load_config(path: str | os.PathLike | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a run config; the built-in default when ``path`` is None.

    A user file is merged over the default, so it only needs the sections it changes.
    """
    data = tomllib.loads(default_config_text())
    if path is not None:
        path = Path(path)
        try:
            user = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        data = _merge(data, user)
    if overrides:
        data = _merge(data, overrides)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{path or 'default config'}: {where}: {first['msg']}{more}") from None


def _merge(base: dict, top: dict) -> dict:
    """Tables merge key by key; a component table with a new ``name`` replaces the old one whole."""
    out = dict(base)
    for key, value in top.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict) and value.get("name", old.get("name")) == old.get("name"):
            out[key] = _merge(old, value)
        else:
            out[key] = value
    return out


def to_toml(data: dict[str, Any]) -> str:
    """Write a validated config back as TOML (the subset configs use: tables, arrays of tables)."""
    lines: list[str] = []
    _toml_table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _toml_table(table: dict, path: list[str], lines: list[str]) -> None:
    import json

    scalars = {k: v for k, v in table.items() if not _is_table(v) and not _is_table_list(v)}
    for key, value in scalars.items():
        if value is not None:  # TOML has no null: an absent key means "not set"
            lines.append(f"{key} = {json.dumps(value)}")
    for key, value in table.items():
        if _is_table(value):
            lines += ["", f"[{'.'.join(path + [key])}]"]
            _toml_table(value, path + [key], lines)
        elif _is_table_list(value):
            for item in value:
                lines += ["", f"[[{'.'.join(path + [key])}]]"]
                _toml_table(item, path + [key], lines)


def _is_table(value) -> bool:
    return isinstance(value, dict)


def _is_table_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
