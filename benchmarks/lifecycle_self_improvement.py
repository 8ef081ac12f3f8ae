"""Self-improvement: `selfloop run` with the default config, labels of 1-5 digits only, within a
wall-clock budget; prints for every round accuracy by length, the share of kept self-labels that
are right, and the admission gate's verdict; then time per round, how busy the machine's cores were
in each phase of a round, and peak memory.

The run is the real command in a subprocess (``lifecycle.max_seconds`` stops it from starting a
new round once the budget is spent; the round in progress finishes). Peak resident memory is the
run's own peak plus each peer worker's (``model.peers``), an upper bound on what they held at once.

    python benchmarks/lifecycle_self_improvement.py --minutes 20 --out runs/bench-self-improvement
    for s in 0 1 2; do python benchmarks/lifecycle_self_improvement.py --seed $s --out runs/bench-$s; done
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from selfloop.core.config import to_toml


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=12, help="upper bound on rounds")
    parser.add_argument("--config", default=None, help="a config merged over the default")
    parser.add_argument("--out", default=None)
    parser.add_argument("--target-digits", type=int, default=8)
    parser.add_argument("--seed", type=int, default=None,
                        help="the run's seed and the model's init_seed (default: the config's)")
    parser.add_argument("--table-only", action="store_true",
                        help="print the table of the run already in --out, run nothing")
    args = parser.parse_args()
    if args.table_only:
        print_table(Path(args.out), None, None, args)
        return

    out = Path(args.out or tempfile.mkdtemp(prefix="selfloop-bench-"))
    config = tomllib.loads(Path(args.config).read_text()) if args.config else {}
    # lifecycle.max_seconds: stop starting rounds so the last one ends near the budget
    config.setdefault("lifecycle", {}).setdefault("max_seconds", round(args.minutes * 60 * 0.85))
    if args.seed is not None:
        config["seed"] = args.seed
        config.setdefault("model", {})["init_seed"] = args.seed
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as budget:
        budget.write(to_toml(config))
    selfloop = Path(sys.executable).parent / "selfloop"
    command = [str(selfloop), "run", "--config", budget.name, "--rounds", str(args.rounds),
               "--out", str(out)]
    started = time.time()
    subprocess.run(command, check=False)
    wall = time.time() - started
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    os.unlink(budget.name)

    print_table(out, wall, peak_mib, args)


def print_table(out: Path, wall: float | None, peak_mib: float | None, args) -> None:
    report = json.loads((out / "report.json").read_text())
    rounds = report["rounds"]
    main_mib = max(peak_mib or 0.0, report.get("peak_rss_mib", 0.0))
    peers = max((len(r.get("peers_optimize", [])) for r in rounds), default=0)
    peer_mib = max((m.get("peak_rss_mib") or 0.0 for r in rounds for m in r.get("peers_optimize", [])),
                   default=0.0)
    peak_mib = main_mib + peers * peer_mib
    digits = sorted({int(d) for r in rounds for d in accuracy(r)})
    print(f"self-improvement: labels of 1-5 digits, seed {report['seed']}, "
          f"budget {args.minutes:g} min; "
          + (f"wall-clock {wall / 60:.1f} min, " if wall is not None else "")
          + f"{len(rounds)} rounds, peak RSS {peak_mib:.0f} MiB"
          + (f" (run {main_mib:.0f} + {peers} peers x {peer_mib:.0f})" if peers else ""))
    header = (f"{'round':>5} {'trained':>8} {'kept':>6} {'label ok':>8} {'min':>5} {'gate':>8} | "
              + " ".join(f"{d:>4}" for d in digits))
    print(header)
    print("-" * len(header))
    elapsed = 0.0
    for r in rounds:
        elapsed += sum(r["seconds"].values())
        data = r.get("data", {})
        ds = data.get("difficulties", [])
        trained = (f"{ds[0]}-{ds[-1]}" if len(ds) > 1 else str(ds[0])) if ds else "-"
        ok = data.get("label_accuracy_kept")
        acc = accuracy(r)
        gate = "admitted" if admitted(r) else "REJECTED"
        print(f"{r['round']:>5} {trained[:8]:>8} {data.get('new', 0):>6} "
              f"{(f'{ok:.0%}' if ok is not None else '-'):>8} {elapsed / 60:>5.1f} {gate:>8} | "
              + " ".join(f"{acc.get(str(d), float('nan')) * 100:>4.0f}" for d in digits))
    for r in rounds:
        if "admission" in r and r["round"] > 0:
            print(f"gate, round {r['round']}: {r['admission']['reason']}"
                  + (f"; tightened {'; '.join(r['admission']['tightened'])}"
                     if r["admission"].get("tightened") else ""))
            by = r["admission"].get("by_difficulty", {})
            print("   " + "  ".join(f"{d}: {v['before'] * 100:.1f}->{v['after'] * 100:.1f} (±{v['margin'] * 100:.1f})"
                                    for d, v in sorted(by.items(), key=lambda kv: int(kv[0]))))
    phases = ["acquire", "select", "optimize", "evaluate"]
    if any(r.get("cpu_busy") for r in rounds):
        print("CPU busy per phase (share of all cores, the whole machine), and seconds:")
        print(f"{'round':>5} " + " ".join(f"{p:>16}" for p in phases))
        for r in rounds:
            busy, seconds = r.get("cpu_busy") or {}, r["seconds"]
            print(f"{r['round']:>5} " + " ".join(
                f"{(f'{busy[p]:.0%}' if p in busy else '-'):>6} {seconds.get(p, 0):>7.0f} s " for p in phases))
    kept = [r for r in rounds if admitted(r)]  # the model a run ends with: the last admitted
    last = accuracy(kept[-1]) if kept else {}
    reached = [d for d in digits if d >= args.target_digits and last.get(str(d), 0) >= 0.95]
    print(f"target (>= 95% exact match at >= {args.target_digits} digits, last admitted round): "
          f"{'met at ' + ', '.join(map(str, reached)) + ' digits' if reached else 'not met'}; "
          f"peak memory {'under' if peak_mib < 3072 else 'OVER'} 3 GiB")
    print(f"report: {out / 'report.json'}")


def accuracy(entry) -> dict:
    """A round's accuracy by difficulty (runs made before the rename wrote it by digits)."""
    return entry.get("accuracy_by_difficulty") or entry.get("accuracy_by_digits") or {}


def admitted(entry) -> bool:
    return entry.get("admission", {}).get("admitted", True)


if __name__ == "__main__":
    main()
