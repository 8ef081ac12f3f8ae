"""Where the meta loop's evaluations run: ``local`` (threads on this host, the default) or ``ray``
(tasks on a Ray cluster, ``selfloop.core.ray_executor``).

An executor runs one validation's sandbox stage somewhere and hands the result back; the judging,
the journal and the archive stay with the loop, on this host (the archive's one writer). The loop
keeps at most ``[evolve] workers`` evaluations in flight, whichever executor runs them.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any, Protocol

from .validate import Validator, Verdict


class Executor(Protocol):
    name: str

    def evaluate(self, validator: Validator, files: dict[str, str], *, changed: Sequence[str],
                 editable: Sequence[str], threshold: float | None, baseline: bool = False) -> Verdict:
        """Validate one variant; ``verdict.sandbox`` names the ``executor`` and the ``node``."""
        ...

    def describe(self) -> dict[str, Any]:
        """What ran the evaluations: ``{"executor": name, "nodes": [...], ...}``."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """Evaluations in this process's threads, each in this host's sandbox."""

    name = "local"

    def __init__(self):
        self.node = socket.gethostname()

    def evaluate(self, validator, files, *, changed, editable, threshold, baseline=False) -> Verdict:
        verdict = validator.validate(files, changed=changed, editable=editable, threshold=threshold,
                                     baseline=baseline)
        verdict.sandbox.update({"executor": self.name, "node": self.node})
        return verdict

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "nodes": [{"node": self.node}]}

    def close(self) -> None:
        pass


def make_executor(config, *, log=None) -> Executor:
    """The executor ``[evolve] executor`` names, connected and checked (a ConfigError if not)."""
    if config.evolve.executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(config.evolve.ray, config.sandbox, log=log)
    return LocalExecutor()
