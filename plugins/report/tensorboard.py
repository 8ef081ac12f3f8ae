"""The built-in experiment tracker: TensorBoard scalars of every finished round and archived variant.

On when the ``tensorboard`` package is importable (``pip install 'selfloop[tensorboard]'``);
``SELFLOOP_TENSORBOARD=0`` turns it off, ``SELFLOOP_TENSORBOARD=1`` insists on it (a missing
package is then a logged line each round, never a stopped run). It writes, with
``torch.utils.tensorboard.SummaryWriter``:

- for each round of ``selfloop run``, to ``<run dir>/tensorboard/`` (evolve's training rounds: to
  ``<evolve run>/checkpoints/tensorboard/``), step = the round: ``accuracy/<difficulty>`` (the first
  evaluator's), ``evaluation/<evaluator>/<metric>``, ``data/<count>``, ``selection/<selector>/kept``
  and ``/dropped``, ``optimize/<metric>``, ``admission/admitted``, ``seconds/<stage>``;
- for each variant evolve archives, to ``<archive>.tensorboard/``, step = the variant's number:
  ``variant/<score>`` and ``variant/admitted``.

``tensorboard --logdir runs/`` shows them. Another tracker is a plugin of the same two hooks; an
MLflow one, for instance, in a ``--plugins-dir`` (or an installed distribution)::

    import mlflow
    from selfloop.core.hookspecs import hookimpl
    from selfloop.plugins.report.tensorboard import round_scalars

    @hookimpl
    def on_round_finished(report, run_dir, config):
        mlflow.set_experiment(str(run_dir))
        with mlflow.start_run(run_name="selfloop", nested=True):
            mlflow.log_metrics({k.replace("/", "."): v for k, v in round_scalars(report).items()},
                               step=report["round"])

(W&B: ``wandb.init(project=..., dir=str(run_dir), resume="allow")`` then
``wandb.log(round_scalars(report), step=report["round"])``.)
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

from selfloop.core.hookspecs import hookimpl

ENV = "SELFLOOP_TENSORBOARD"


def enabled() -> bool:
    setting = os.environ.get(ENV, "").strip()
    if setting in ("0", "false", "no", "off"):
        return False
    return bool(setting) or importlib.util.find_spec("tensorboard") is not None


def round_scalars(report: dict[str, Any]) -> dict[str, float]:
    """A round report's numbers, flat: ``{"accuracy/3": 0.7, "selection/dedup/kept": 105, ...}``."""
    out: dict[str, float] = {}
    for difficulty, value in report.get("accuracy_by_difficulty", {}).items():
        out[f"accuracy/{difficulty}"] = value
    for evaluation in report.get("evaluations", []):
        for key, value in evaluation.get("metrics", {}).items():
            out[f"evaluation/{evaluation['evaluator']}/{key}"] = value
    for key in ("acquired", "new", "training_set"):
        out[f"data/{key}"] = report.get("data", {}).get(key)
    for selection in report.get("selection", []):
        out[f"selection/{selection['selector']}/kept"] = selection["kept"]
        out[f"selection/{selection['selector']}/dropped"] = sum(selection.get("dropped", {}).values())
    for key, value in report.get("optimize", {}).items():
        out[f"optimize/{key}"] = value
    out["admission/admitted"] = report.get("admission", {}).get("admitted")
    for stage, seconds in report.get("seconds", {}).items():
        out[f"seconds/{stage}"] = seconds
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float))}


def variant_scalars(variant: dict[str, Any]) -> dict[str, float]:
    """An archived variant's scores and verdict, flat: ``{"variant/full.score": 0.8, ...}``."""
    out = {f"variant/{k}": v for k, v in (variant.get("scores") or {}).items()}
    out["variant/admitted"] = variant.get("status") == "admitted"
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float))}


def write_scalars(directory: Path, scalars: dict[str, float], step: int) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(directory)) as writer:  # one short-lived writer per event
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, global_step=step)


@hookimpl
def on_round_finished(report, run_dir, config):
    if enabled():
        write_scalars(Path(run_dir) / "tensorboard", round_scalars(report), report["round"])


@hookimpl
def on_variant_archived(variant, archive_dir):
    if enabled():
        archive_dir = Path(archive_dir)
        step = int(variant["id"].lstrip("v")) if variant["id"].lstrip("v").isdigit() else 0
        write_scalars(archive_dir.with_name(archive_dir.name + ".tensorboard"),
                      variant_scalars(variant), step)
