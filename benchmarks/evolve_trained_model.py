"""The headline of evolving the whole lifecycle: what the champion's pipeline does to the next model.

For each seed this runs ``selfloop evolve`` (the real command, offline: no LLM) with the given
config, or reads a finished run's ``--json`` report. At its end, evolve confirms the champion on
fresh problems twice: its answers (seed plugins vs champion, same checkpoint), and, when the
champion changed anything a training round runs, the model it trains: one probe round from the
checkpoint it won on with the champion's pipeline and one with the seed's, same budget
(``[evolve.probe]``) and seed, each model's greedy answers scored on fresh held-out problems at the
frontier and one difficulty past it. The first table is that trained-model comparison per seed; a
champion that changed nothing training runs trains the seed's model (Δ 0 by construction), which the
table says. The second is, per operator over all seeds: variants made, variants evaluated per hour
(their evaluation seconds), and the share admitted.

    python benchmarks/evolve_trained_model.py --seeds 0 1 2 --out runs/headline            # default config
    python benchmarks/evolve_trained_model.py --config examples/configs/smoke-every-stage.toml --iterations 8
    python benchmarks/evolve_trained_model.py --reuse --out runs/headline                  # tables only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def run_seed(seed: int, out: Path, config: str | None, iterations: int | None, reuse: bool) -> dict:
    report = out / f"seed-{seed}" / "report.json"
    if reuse and report.is_file():
        return json.loads(report.read_text())
    report.parent.mkdir(parents=True, exist_ok=True)
    command = [str(Path(sys.executable).parent / "selfloop"), "evolve", "--seed", str(seed),
               "--archive", str(out / f"seed-{seed}" / "archive"), "--fresh", "--json"]
    command += ["--config", config] if config else []
    command += ["--iterations", str(iterations)] if iterations is not None else []
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise SystemExit(f"seed {seed}: selfloop evolve failed ({done.returncode}): {' | '.join(tail)}")
    data = json.loads(done.stdout[done.stdout.index("{"):])
    data["wall_seconds"] = time.monotonic() - started
    report.write_text(json.dumps(data, indent=1))
    (report.parent / "evolve.log").write_text(done.stderr)
    return data


def operators(archive_dir: Path) -> dict[str, dict]:
    """Per operator: variants made, admitted, evaluation seconds (iterations only, not baselines)."""
    from selfloop.archive import Archive

    out: dict[str, dict] = {}
    with Archive(archive_dir) as archive:
        for v in archive.list():
            if v.meta.get("iteration") is None:
                continue
            row = out.setdefault(v.meta.get("operator") or v.meta.get("proposer") or "?",
                                 {"made": 0, "admitted": 0, "seconds": 0.0})
            row["made"] += 1
            row["admitted"] += v.admitted
            row["seconds"] += float(v.meta.get("seconds") or 0.0) + float(v.meta.get("propose_seconds") or 0.0)
    return out


def fmt(x, signed=False):
    return "-" if x is None else (f"{x:+.3f}" if signed else f"{x:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="run config (default: the built-in default run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--iterations", type=int, help="evolve iterations (default: the config's)")
    parser.add_argument("--out", type=Path, default=Path("runs/headline"))
    parser.add_argument("--reuse", action="store_true", help="read finished seeds' reports instead of running")
    args = parser.parse_args()

    rows, ops = [], {}
    for seed in args.seeds:
        data = run_seed(seed, args.out, args.config, args.iterations, args.reuse)
        rows.append((seed, data))
        for name, row in operators(args.out / f"seed-{seed}" / "archive").items():
            total = ops.setdefault(name, {"made": 0, "admitted": 0, "seconds": 0.0})
            for key in total:
                total[key] += row[key]

    print(f"config: {args.config or 'the default run'}; seeds {args.seeds}; load {os.getloadavg()[0]:.2f} at the end")
    print(f"{'seed':>4} {'champion':>9} {'changed':>22} {'trained: seed':>14} {'champion':>9} {'Δ':>7}"
          f" {'answers: seed':>14} {'champion':>9} {'Δ':>7} {'minutes':>8}")
    deltas = []
    for seed, data in rows:
        confirm = data.get("confirmation") or {}
        probe = confirm.get("probe")
        champion = confirm.get("champion") or "-"
        kinds = _champion_kinds(args.out / f"seed-{seed}" / "archive", champion)
        a_seed, a_champ = confirm.get("seed_score"), confirm.get("champion_score")
        if probe:
            t_seed, t_champ = probe["seed_score"], probe["champion_score"]
        else:  # nothing training runs changed: the champion's pipeline trains the seed's model
            t_seed = t_champ = None
        t_delta = None if None in (t_seed, t_champ) else t_champ - t_seed
        if t_delta is not None:
            deltas.append(t_delta)
        a_delta = None if None in (a_seed, a_champ) else a_champ - a_seed
        print(f"{seed:>4} {champion:>9} {','.join(kinds) or 'nothing':>22} {fmt(t_seed):>14} {fmt(t_champ):>9}"
              f" {fmt(t_delta, True) if probe else 'same':>7} {fmt(a_seed):>14} {fmt(a_champ):>9}"
              f" {fmt(a_delta, True):>7} {data.get('wall_seconds', 0) / 60:>8.1f}")
    if deltas:
        print(f"trained-model Δ, median over {len(deltas)} seed(s) whose champion trains differently: "
              f"{statistics.median(deltas):+.3f}")
    print()
    print(f"{'operator':<20}{'made':>6}{'admitted':>10}{'share':>8}{'per hour':>10}")
    for name, row in sorted(ops.items(), key=lambda kv: -kv[1]["made"]):
        per_hour = row["made"] / (row["seconds"] / 3600) if row["seconds"] else float("nan")
        print(f"{name:<20}{row['made']:>6}{row['admitted']:>10}{row['admitted'] / row['made']:>8.0%}{per_hour:>10.1f}")


def _champion_kinds(archive_dir: Path, champion: str) -> list[str]:
    """The component kinds in which the champion's tree differs from the seed's (v0)."""
    from selfloop.archive import Archive

    if champion in ("-", None):
        return []
    with Archive(archive_dir) as archive:
        kinds = set()
        for v in archive.lineage(champion):
            kinds |= set(v.meta.get("changed_kinds") or [])
    return sorted(kinds)


if __name__ == "__main__":
    main()
