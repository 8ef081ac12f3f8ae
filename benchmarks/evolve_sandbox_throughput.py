"""Sandboxed evaluations per minute with each backend, one at a time and with parallel workers.

Each evaluation is the meta loop's real one: the seed plugins validated in the sandbox (load,
contract, smoke, full, held-out) against a small checkpoint, then scored by the judge here.

    python benchmarks/evolve_sandbox_throughput.py [--runs 4] [--workers 2] [--checkpoint DIR]

Without --checkpoint a tiny untrained model is made (the cost of the evaluation machinery, not of
a trained model's generations). Prints a table: backend, workers, median seconds per evaluation,
evaluations per minute.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--config", type=Path, help="run config (default: examples/configs/smoke.toml)")
    args = parser.parse_args()

    from selfloop.core.config import load_config
    from selfloop.core.evolve import (
        bake_options,
        editable_files,
        read_surface,
        surface_dir,
    )
    from selfloop.core.judge import ProblemPlan, draw_held_out, pinned_task
    from selfloop.core.models import save_policy
    from selfloop.core.registry import load_registry
    from selfloop.core.validate import Validator
    from selfloop.plugins.model.embedded import Embedded
    from selfloop.sandbox import backend_availability, choose_backend

    config_path = args.config or Path(__file__).resolve().parent.parent / "examples/configs/smoke.toml"
    tmp = Path(tempfile.mkdtemp(prefix="selfloop-bench-"))
    checkpoint = args.checkpoint or save_policy(Embedded(n_layer=2, n_embd=64, n_head=4).create(),
                                                tmp / "model")
    rows = []
    console = Console()
    for backend, (usable, why) in backend_availability(load_config(config_path).sandbox).items():
        if not usable:
            rows.append((backend, "-", "-", "-", f"unavailable: {why}"))
            continue
        config = load_config(config_path, {"sandbox": {"backend": backend}})
        registry = load_registry()
        surface = surface_dir()
        targets = list(config.evolve.targets)
        config = config.model_copy(update={"refiner": config.evolve.refiner}, deep=True)
        config, files, _ = bake_options(config, registry, read_surface(surface), targets, surface)
        s = config.evolve
        plan = ProblemPlan([4, 5, 6], 5, s.held_out_per_difficulty, s.held_out_select)
        task = pinned_task(config)
        validator = Validator(
            sandbox=choose_backend(config.sandbox), config=config, checkpoint=checkpoint, plan=plan,
            held_out=draw_held_out(task, plan, 1), pinned_task=task, visible_seed=1, sample_seed=0,
            smoke_size={"refine": s.smoke_per_difficulty, "select": s.smoke_select},
            full_size={"refine": s.full_per_difficulty, "select": s.full_select},
            z=s.significance_z)
        editable = editable_files(config, registry, targets, surface)

        def one(_, validator=validator, files=files, editable=editable, backend=backend):
            start = time.perf_counter()
            verdict = validator.validate(files, changed=[], editable=editable, threshold=None)
            if not verdict.admitted:
                raise SystemExit(f"{backend}: evaluation failed: {verdict.reasons}")
            return time.perf_counter() - start

        with Progress(console=console, transient=True) as progress:
            for workers in (1, args.workers):
                task_id = progress.add_task(f"{backend}, {workers} worker(s)", total=args.runs)
                started = time.perf_counter()
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    seconds = []
                    for value in pool.map(one, range(args.runs)):
                        seconds.append(value)
                        progress.advance(task_id)
                wall = time.perf_counter() - started
                rows.append((backend, str(workers), f"{statistics.median(seconds):.1f}",
                             f"{60 * args.runs / wall:.2f}", f"{args.runs} evaluations in {wall:.0f} s"))
    table = Table("backend", "workers", "median s / evaluation", "evaluations / minute", "note",
                  title="Sandboxed evaluations (seed plugins, smoke config sizes)")
    for row in rows:
        table.add_row(*row)
    console.print(table)


if __name__ == "__main__":
    sys.exit(main())
