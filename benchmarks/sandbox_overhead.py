"""Overhead of one sandboxed evaluation, and throughput with several in parallel.

One evaluation = start the sandbox, run a trivial Python payload that writes a JSON result, collect
the result, remove the sandbox. Compared in the same run with calling the same payload in-process
and with a bare `python -c` subprocess (no sandbox); the "sh payload" rows write the same result
from a shell, so the table separates the cost of a fresh interpreter from that of the sandbox.

    python benchmarks/sandbox_overhead.py [--runs 15] [--parallel 8] [--workers 1,2,4] [--image TAG]

Docker rows appear when the engine answers and the image is built (`selfloop sandbox build`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table
from selfloop.core.config import SandboxSettings
from selfloop.sandbox import backend_availability, choose_backend

PAYLOAD = "import json, os; json.dump({'score': 1.0}, open(os.environ['SELFLOOP_RESULT'], 'w'))"
SHELL_PAYLOAD = "echo '{\"score\": 1.0}' > \"$SELFLOOP_RESULT\""  # the same result, no Python start


def trivial_payload(result_path: str) -> None:
    with open(result_path, "w") as f:
        json.dump({"score": 1.0}, f)


def time_runs(runs: int, once) -> list[float]:
    once()  # warm caches (page cache, Docker's image layers)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        once()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--parallel", type=int, default=8, help="evaluations per throughput batch")
    parser.add_argument("--workers", default="1,2,4", help="parallel workers to try, comma separated")
    parser.add_argument("--image", default=SandboxSettings().image, help="the Docker backend's image")
    args = parser.parse_args()

    code = Path(tempfile.mkdtemp(prefix="sandbox-bench-"))
    code.chmod(0o755)  # mkdtemp's 0700 would close it to Docker's payload user
    result_file = code / "in-process.json"
    settings = SandboxSettings(timeout_s=60, image=args.image)
    available = {name: ok for name, (ok, _) in backend_availability(settings).items()}
    backends = [name for name in ("process", "docker") if available[name]]
    sandboxes = {name: choose_backend(settings.model_copy(update={"backend": name})) for name in backends}

    def sandboxed(name: str, command=("python", "-c", PAYLOAD)):
        def once():
            result = sandboxes[name].run(list(command), code_dir=code)
            assert result.status == "ok" and result.result == {"score": 1.0}, (result.status, result.reason)
        return once

    env = {"SELFLOOP_RESULT": str(code / "bare.json"), "PATH": os.environ["PATH"]}
    rows = {
        "in-process call": time_runs(args.runs, lambda: trivial_payload(str(result_file))),
        "bare subprocess (python -c)": time_runs(
            args.runs, lambda: subprocess.run([sys.executable, "-c", PAYLOAD], env=env, check=True)),
    }
    for name in backends:
        rows[f"{name} sandbox"] = time_runs(args.runs, sandboxed(name))
    for name in backends:
        rows[f"{name} sandbox, sh payload"] = time_runs(args.runs, sandboxed(name, ("sh", "-c", SHELL_PAYLOAD)))
    baseline = statistics.median(rows["in-process call"])

    console = Console()
    table = Table(title=f"One evaluation, median of {args.runs} (seconds)")
    for column in ("", "median", "min", "max", "overhead vs in-process"):
        table.add_column(column, justify="right" if column else "left")
    for name, times in rows.items():
        median = statistics.median(times)
        table.add_row(name, f"{median:.4f}", f"{min(times):.4f}", f"{max(times):.4f}",
                      "-" if name == "in-process call" else f"{median - baseline:.4f}")
    console.print(table)

    workers = [int(w) for w in args.workers.split(",")]
    table = Table(title=f"Throughput: {args.parallel} evaluations per batch (evaluations / second)")
    table.add_column("backend")
    for w in workers:
        table.add_column(f"{w} worker{'s' * (w > 1)}", justify="right")
    for name in backends:
        cells = []
        for w in workers:
            with ThreadPoolExecutor(w) as pool:
                started = time.perf_counter()
                once = sandboxed(name)
                list(pool.map(lambda _, once=once: once(), range(args.parallel)))
                cells.append(f"{args.parallel / (time.perf_counter() - started):.2f}")
        table.add_row(name, *cells)
    console.print(table)
    missing = [name for name in ("process", "docker") if not available[name]]
    if missing:
        console.print(f"not measured (unavailable here): {', '.join(missing)}")
    console.print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
