"""The champion's held-out score against iterations of `selfloop evolve`, for the dgm and hgm parent
selectors (and any other spec given), over seeds, with the same budget for each.

Every run is the meta loop's real one: the smoke config, the offline mutation proposer, the seed
plugins' surface, the process sandbox, one worker, one round. Training is taken out: the smoke
config's base checkpoint is trained once (``_base.base_checkpoint``) and handed out to every run
(``evolve_ray_scaling.HandOut``), so the runs differ only in their parents (and the seed). A run's
seed sets its held-out problems and its proposer's draws, so at one seed every selector faces the
same problems and the seed plugins score the same.

    python benchmarks/parent_selectors.py [--seeds 0 1 2] [--iterations 12]
        [--selectors dgm hgm hgm:outcome=score] [--checkpoints 3 6 9 12]

Prints, per checkpoint (iterations done) and selector, the median over seeds of the champion so
far (the best admitted held-out score, as `benchmarks/evolve_champion_growth.py` counts it) and of
its gain over the seed plugins; then per selector the admitted variants, those that beat their
parent, the distinct parents chosen and the champion's depth (median over seeds), and seconds per run.
Each run is a process of its own; its result is kept in OUT/rows/ and reused unless ``--fresh``.

What it printed at a small size (``--seeds 0 1 2 --iterations 6``, two cores shared with other
jobs, load average 6-10; 155-540 s a run), too few iterations to tell the selectors apart:

    iterations  dgm champion  hgm champion  dgm Δ seed  hgm Δ seed
    0           0.706         0.706         +0.000      +0.000
    2           0.730         0.730         +0.000      +0.000
    3           0.730         0.730         +0.000      +0.000
    4           0.730         0.730         +0.000      +0.000
    6           0.777         0.730         +0.054      +0.000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _base import SMOKE, base_checkpoint
from evolve_ray_scaling import HandOut


def parse_spec(spec: str) -> tuple[str, dict]:
    """``name`` or ``name:key=value,key=value`` (values read as JSON when they parse)."""
    name, _, rest = spec.partition(":")
    options = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return name, options


def champion_curve(events: list[dict], archive) -> dict:
    """The champion so far after each iteration of round 0, and what the run's variants did."""
    attempts = sorted((e["attempt"] for e in events if e["event"] == "attempt"), key=lambda a: a["iteration"])
    archived = {e["key"]: e["variant"] for e in events if e["event"] == "archived"}
    seed_id = next(e["variant"] for e in events if e["event"] == "baseline" and e["role"] == "seed")
    seed = archive.get(seed_id).scores.get("score")
    best, best_id, curve, improved, parents = seed, seed_id, [], 0, []
    for a in attempts:
        score = a["verdict"]["scores"].get("score")
        parents.append(a["parent"])
        if a["verdict"]["admitted"] and score is not None:
            parent = archive.get(a["parent"]).scores.get("score")
            improved += parent is not None and score > parent
            if score > best:
                best, best_id = score, archived.get(a["key"], best_id)
        curve.append(best)
    depth, v = 0, archive.get(best_id)
    while v.id != seed_id and v.parent:
        depth, v = depth + 1, archive.get(v.parent)
    return {"seed": seed, "curve": curve, "admitted": sum(a["verdict"]["admitted"] for a in attempts),
            "improved": improved, "distinct_parents": len(set(parents)), "champion_depth": depth,
            "iterations": len(attempts)}


def row(args) -> None:
    """One run, in this process: prints its champion curve as JSON."""
    from selfloop.archive import Archive
    from selfloop.core.config import load_config
    from selfloop.core.evolve import Evolution, Journal
    from selfloop.core.registry import load_registry
    from selfloop.sandbox import choose_backend

    name, options = parse_spec(args.selector)
    overrides = {"seed": args.seed, "sandbox": {"backend": "process"},
                 "evolve": {"iterations": args.iterations, "workers": 1, "rounds": 1, "confirm": False}}
    config = load_config(SMOKE, overrides)
    registry = load_registry([])
    tmp = Path(tempfile.mkdtemp(prefix="selfloop-parents-row-"))
    try:
        evolution = Evolution(config, archive_path=tmp / "A", out=tmp / "A.run",
                              sandbox=choose_backend(config.sandbox), registry=registry,
                              trainer=lambda c: HandOut(Path(args.round_dir)),
                              proposer=registry.create("proposer", "mutation", {}),
                              parent_selector=registry.create("parent_selector", name, options))
        started = time.monotonic()
        evolution.run()
        seconds = time.monotonic() - started
        result = champion_curve(Journal(tmp / "A.run" / "journal.jsonl").events(), Archive(tmp / "A"))
        print(json.dumps({**result, "seconds": seconds}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_row(round_dir: Path, selector: str, seed: int, iterations: int, cache: Path, fresh: bool) -> dict:
    if cache.is_file() and not fresh:
        return json.loads(cache.read_text())
    command = [sys.executable, __file__, "--row", "--selector", selector, "--seed", str(seed),
               "--iterations", str(iterations), "--round-dir", str(round_dir)]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env={**os.environ, "SELFLOOP_PROGRESS": "0"})
    if done.returncode != 0:
        raise RuntimeError(f"{selector} seed {seed} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result))
    return result


def at(curve: list[float], seed: float, iterations: int) -> float:
    """The champion after ``iterations`` (the seed's score at 0; the last one if the run stopped early)."""
    return seed if iterations == 0 else curve[min(iterations, len(curve)) - 1] if curve else seed


def tables(results: dict[str, list[dict]], checkpoints: list[int]):
    from rich.table import Table

    selectors = list(results)
    growth = Table("iterations", *[f"{s} champion" for s in selectors], *[f"{s} Δ seed" for s in selectors],
                   title=f"Champion held-out score, median over {len(next(iter(results.values())))} seeds")
    for n in checkpoints:
        champs = [statistics.median(at(r["curve"], r["seed"], n) for r in results[s]) for s in selectors]
        gains = [statistics.median(at(r["curve"], r["seed"], n) - r["seed"] for r in results[s]) for s in selectors]
        growth.add_row(str(n), *[f"{c:.3f}" for c in champs], *[f"{g:+.3f}" for g in gains])
    runs = Table("selector", "seed", "seed score", "final champion", "admitted", "beat parent",
                 "distinct parents", "champion depth", "seconds", title="Per run")
    for s in selectors:
        for r in results[s]:
            runs.add_row(s, str(r["_seed"]), f"{r['seed']:.3f}", f"{at(r['curve'], r['seed'], 10**9):.3f}",
                         f"{r['admitted']}/{r['iterations']}", str(r["improved"]), str(r["distinct_parents"]),
                         str(r["champion_depth"]), f"{r['seconds']:.0f}")
    return growth, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--selectors", nargs="+", default=["dgm", "hgm"],
                        help="parent selector specs: NAME or NAME:KEY=VALUE,KEY=VALUE")
    parser.add_argument("--checkpoints", type=int, nargs="+", help="iterations to report (default: quarters)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "selfloop-bench-parents")
    parser.add_argument("--fresh", action="store_true", help="run again what OUT/rows/ already holds")
    parser.add_argument("--row", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--selector", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--round-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        return row(args)

    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 150)
    round_dir = base_checkpoint(args.out / "base")
    checkpoints = args.checkpoints or sorted({0, *(max(1, round(args.iterations * q / 4)) for q in (1, 2, 3, 4))})
    results: dict[str, list[dict]] = {s: [] for s in args.selectors}
    for seed in args.seeds:  # interleaved: a change of load hits every selector alike
        for selector in args.selectors:
            tag = selector.replace(":", "_").replace(",", "_")
            cache = args.out / "rows" / f"{tag}-seed{seed}-it{args.iterations}.json"
            result = run_row(round_dir, selector, seed, args.iterations, cache, args.fresh)
            results[selector].append({**result, "_seed": seed})
            final = at(result["curve"], result["seed"], args.iterations)
            console.print(f"{selector} seed {seed}: champion {final:.3f} (seed {result['seed']:.3f}), "
                          f"{result['seconds']:.0f} s", highlight=False)
    for table in tables(results, checkpoints):
        console.print(table)


if __name__ == "__main__":
    sys.exit(main())
