"""What a run is made of: every lifecycle component of a run config, built from the registry.

``build_components(config, registry) -> Components`` builds the model provider, the task (as a
``TaskView``) and every stage's component; ``call_stage`` runs one component method so that
anything it raises names the stage and the plugin.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import Component
from .errors import SelfloopError, StageError
from .tasks import build_task


@dataclass
class Part:
    """A built component and where it came from (for error messages)."""

    kind: str
    name: str
    plugin: str
    component: Any


@dataclass
class Components:
    """Every lifecycle component of a run config, built. ``task.component`` is a ``TaskView``."""

    model: Part
    task: Part
    acquirers: list[Part]
    selectors: list[Part]
    generator: Part
    rewarder: Part
    optimizer: Part
    refiner: Part
    evaluators: list[Part]
    config: Any = None
    plugins_dirs: list[str] = field(default_factory=list)  # where the plugins came from (for peers)
    gate_refiner: Part | None = None  # what the admission gate answers with (lifecycle.admission_refiner)
    registry: Any = None  # the registry they came from: its plugins' event hooks follow the run


def build_components(config, registry) -> Components:
    """Build the task and every lifecycle component the config names (not proposer/parents)."""
    config.check_names(registry)

    def part(kind, component):
        reg = registry.get(kind, component.name)
        return Part(kind, component.name, reg.plugin,
                    registry.create(kind, component.name, component.options))

    model = part("model", config.model)
    task = Part("task", config.task.name, registry.get("task", config.task.name).plugin,
                build_task(config, registry, model=model.component))
    plugins_dirs = list(getattr(registry, "plugins_dirs", []))
    return Components(
        model=model,
        task=task,
        acquirers=[part("acquirer", c) for c in config.acquire],
        selectors=[part("selector", c) for c in config.select],
        generator=part("generator", config.generator),
        rewarder=part("rewarder", config.rewarder),
        optimizer=part("optimizer", config.optimizer),
        refiner=part("refiner", config.refiner),
        evaluators=[part("evaluator", c) for c in config.evaluate],
        config=config,
        plugins_dirs=plugins_dirs,
        gate_refiner=part("refiner", Component(name=config.lifecycle.admission_refiner)),
        registry=registry,
    )


def call_stage(stage: str, part: Part, method: str, *args, **kwargs):
    """Run one component method; anything it raises becomes a StageError naming it."""
    try:
        return getattr(part.component, method)(*args, **kwargs)
    except (SelfloopError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise StageError(stage, part.name, part.plugin, exc) from exc
