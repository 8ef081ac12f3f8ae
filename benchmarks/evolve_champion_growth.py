"""How the champion's held-out score grows with iterations, and how long a variant takes from
proposal to archive, read from a finished (or running) `selfloop evolve` run.

    selfloop evolve --archive runs/archive            # the default main job
    python benchmarks/evolve_champion_growth.py --archive runs/archive [--out runs/archive.run]

Prints, per training round: the seed's held-out score, the best score after each iteration (the
champion so far), and, per variant, the median seconds from proposal to archived variant.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, required=True)
    parser.add_argument("--out", type=Path, help="the run directory (default ARCHIVE.run)")
    args = parser.parse_args()
    from selfloop.archive import Archive
    from selfloop.core.evolve import Journal

    out = args.out or args.archive.with_name(args.archive.name + ".run")
    events = Journal(out / "journal.jsonl").events()
    archive = Archive(args.archive)
    console = Console()

    attempts = {e["attempt"]["key"]: e["attempt"] for e in events if e["event"] == "attempt"}
    archived = {e["key"]: e for e in events if e["event"] == "archived"}
    baselines = {(e["round"], e["role"]): e["variant"] for e in events if e["event"] == "baseline"}
    growth = Table("round", "iteration", "variant", "decision", "held-out", "champion so far", "Δ vs seed",
                   title="Champion held-out score by iteration")
    latency = []
    for r in sorted({a["round"] for a in attempts.values()} | {k[0] for k in baselines}):
        seed = archive.get(baselines[(r, "seed")])
        best = seed.scores.get("score")
        champion = baselines.get((r, "champion"))
        if champion:
            best = max(best, archive.get(champion).scores.get("score") or 0.0)
        growth.add_row(str(r), "-", seed.id, "seed", f"{seed.scores.get('score'):.3f}", f"{best:.3f}", "+0.000")
        for a in sorted((a for a in attempts.values() if a["round"] == r), key=lambda a: a["iteration"]):
            event = archived.get(a["key"])
            score = a["verdict"]["scores"].get("score")
            if a["verdict"]["admitted"] and score is not None:
                best = max(best, score)
            if event and "time" in event and "proposed_at" in a.get("meta", {}):
                latency.append(event["time"] - a["meta"]["proposed_at"])
            growth.add_row(str(r), str(a["iteration"]), event["variant"] if event else "?",
                           "admitted" if a["verdict"]["admitted"] else "rejected",
                           "-" if score is None else f"{score:.3f}", f"{best:.3f}",
                           f"{best - seed.scores['score']:+.3f}")
    console.print(growth)
    confirm = [e for e in events if e["event"] == "baseline" and e["role"].startswith("confirm")]
    if confirm:
        table = Table("role", "variant", "held-out (fresh problems)", title="Confirmation on fresh held-out problems")
        for e in confirm:
            table.add_row(e["role"], e["variant"], f"{archive.get(e['variant']).scores.get('score'):.3f}")
        console.print(table)
    if latency:
        console.print(f"proposal → archived variant: median {statistics.median(latency):.1f} s, "
                      f"min {min(latency):.1f} s, max {max(latency):.1f} s over {len(latency)} variants")
    console.print(json.dumps({"variants": len(archive.list()), "run": str(out)}))


if __name__ == "__main__":
    sys.exit(main())
