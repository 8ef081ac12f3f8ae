"""Evaluations per minute of `selfloop evolve` on a Ray cluster of one and of two nodes, against the
local executor with the same number of workers, in one run; then a node killed mid-run.

Every row is the meta loop's real one (the mutation proposer, the dgm parents, the seed plugins'
surface, the process sandbox) against one checkpoint: the smoke config's base round, trained once.
Training is taken out (each round hands out that checkpoint), so the rows time the evaluations.
Each Ray node is its own `ray start` process tree (``--head``, then ``--address HEAD``), one CPU
each, on loopback addresses; an evaluation asks for one CPU, so two nodes run two at once.

    python benchmarks/evolve_ray_scaling.py [--iterations 6] [--repeats 3]

Prints per row: executor, nodes, workers, evaluations, median evaluations per minute, the nodes
that evaluated; the fault row kills the second node's process tree (SIGKILL) once the first
evaluation after the seed's has started, and says what was retried and what was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _base import SMOKE, base_checkpoint

# Every process sends the cluster's token. The nodes listen on 127.0.0.2, 127.0.0.3...: loopback
# addresses Ray keeps (127.0.0.1 it rewrites to the LAN's address when a cluster has many nodes).
# Workers at nice 0, as the local executor's threads are (Ray's default, 15, starves them beside other work).
LOOPBACK = {"RAY_AUTH_MODE": "token", "RAY_worker_niceness": "0"}
RAY = str(Path(sys.executable).parent / "ray")


class Cluster:
    """``nodes`` Ray nodes of one CPU each, every one a `ray start --block` process group."""

    def __init__(self, nodes: int, workdir: Path):
        self.port = _free_port()
        self.address = f"127.0.0.2:{self.port}"
        self.env = {**os.environ, **LOOPBACK}
        self.logs = workdir
        self.nodes = [self._start(["--head", "--port", str(self.port), "--include-dashboard", "false"], 0)]
        for k in range(1, nodes):
            self.nodes.append(self._start(["--address", self.address], k))
        self._wait_for(nodes)

    def _start(self, args, k):
        with open(self.logs / f"node{k}.log", "w") as log:  # the child keeps its own descriptor
            return subprocess.Popen([RAY, "start", "--block", "--num-cpus", "1", "--node-ip-address", f"127.0.0.{2 + k}",
                                     "--disable-usage-stats", *args], stdout=log, stderr=subprocess.STDOUT,
                                    env=self.env, start_new_session=True)

    def _wait_for(self, count: int) -> None:
        code = (f"import ray, json; ray.init(address={self.address!r}, _node_ip_address='127.0.0.2', "
                "log_to_driver=False); "
                "print(json.dumps(sum(1 for n in ray.nodes() if n['Alive'])))")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=self.env,
                                  check=False)
            if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(count)]:
                return
            time.sleep(2)
        raise RuntimeError(f"the Ray cluster at {self.address} did not reach {count} nodes")

    def kill(self, k: int) -> None:
        os.killpg(self.nodes[k].pid, signal.SIGKILL)

    def stop(self) -> None:
        for process in reversed(self.nodes):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for process in self.nodes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.2", 0))
        return s.getsockname()[1]


# --- one row, in a process of its own ------------------------------------------------------------


class HandOut:
    """Hands out the prepared round directory (model/ and its report.json) for every round."""

    def __init__(self, round_dir: Path):
        self.round_dir = round_dir

    def train(self, round_index, *, plugins_dir, previous, out):
        if not out.exists():
            shutil.copytree(self.round_dir, out)
        return out / "model"


def row(args) -> None:
    from selfloop.core.config import load_config
    from selfloop.core.evolve import Evolution
    from selfloop.core.executor import make_executor
    from selfloop.core.registry import load_registry

    overrides = {"evolve": {"iterations": args.iterations, "workers": args.workers, "rounds": 1,
                            "confirm": False, "executor": args.executor,
                            "ray": {"address": args.address}},
                 "sandbox": {"backend": "process"}}
    config = load_config(SMOKE, overrides)
    registry = load_registry([])
    executor = make_executor(config)
    tmp = Path(tempfile.mkdtemp(prefix="selfloop-ray-row-"))
    evolution = Evolution(config, archive_path=tmp / "A", out=tmp / "A.run", sandbox=None if args.executor == "ray"
                          else __import__("selfloop.sandbox", fromlist=["x"]).choose_backend(config.sandbox),
                          registry=registry, trainer=lambda c: HandOut(Path(args.round_dir)),
                          proposer=registry.create("proposer", "mutation", {}),
                          parent_selector=registry.create("parent_selector", "dgm", {}), executor=executor)
    if args.kill_after_seed:
        Path(args.kill_after_seed).unlink(missing_ok=True)
        original = evolution._batch

        def announce(*a, **k):  # the seed is judged: the parent may kill a node now
            Path(args.kill_after_seed).write_text("go")
            return original(*a, **k)

        evolution._batch = announce
    started = time.monotonic()
    evolution.run()
    seconds = time.monotonic() - started
    variants = evolution.archive.list()
    placement = evolution.placement()
    executor.close()
    failed = [v.id for v in variants if any(r.startswith("sandbox error: executor") for r in v.meta.get("reasons", []))]
    print(json.dumps({"evaluations": len(variants), "seconds": seconds, "evaluated_on": placement["evaluated_on"],
                      "retried": placement.get("retried", 0), "failed": failed,
                      "scored": sum(1 for v in variants if v.scores.get("score") is not None)}))
    shutil.rmtree(tmp, ignore_errors=True)


def run_row(round_dir: Path, executor: str, workers: int, iterations: int, address: str | None = None,
            kill: tuple[Cluster, int] | None = None) -> dict:
    command = [sys.executable, __file__, "--row", "--executor", executor, "--workers", str(workers),
               "--iterations", str(iterations), "--round-dir", str(round_dir)]
    if address:
        command += ["--address", address]
    flag = Path(tempfile.mktemp(prefix="selfloop-kill-"))
    if kill:
        command += ["--kill-after-seed", str(flag)]
    env = {**os.environ, **LOOPBACK, "SELFLOOP_PROGRESS": "0"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    if kill:
        while not flag.exists() and process.poll() is None:
            time.sleep(0.2)
        time.sleep(3)  # the first evaluations after the seed's are running now
        kill[0].kill(kill[1])
    out, err = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"row {executor} x{workers} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="0: the node-kill row alone")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "selfloop-bench-ray")
    parser.add_argument("--row", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--executor", default="local", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument("--round-dir", help=argparse.SUPPRESS)
    parser.add_argument("--kill-after-seed", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        return row(args)

    from rich.console import Console
    from rich.table import Table

    round_dir = base_checkpoint(args.out)
    console = Console()
    shapes = [("local", 1, 1), ("ray", 1, 1), ("local", 2, 2), ("ray", 2, 2)]  # executor, nodes, workers
    results: dict[tuple, list[dict]] = {shape: [] for shape in shapes}
    for repeat in range(args.repeats):
        for executor, nodes, workers in shapes:  # interleaved: a load change hits every row alike
            cluster = Cluster(nodes, args.out) if executor == "ray" else None
            try:
                result = run_row(round_dir, executor, workers, args.iterations,
                                 cluster.address if cluster else None)
            finally:
                if cluster:
                    cluster.stop()
            results[(executor, nodes, workers)].append(result)
            rate = result["evaluations"] / result["seconds"] * 60
            console.print(f"repeat {repeat + 1}: {executor} {nodes} node(s) x{workers}: "
                          f"{result['evaluations']} evaluations in {result['seconds']:.0f} s ({rate:.2f}/min)")
    table = Table("executor", "nodes", "workers", "evaluations", "s (median)", "evaluations/min (median)",
                  "evaluated on", title=f"evolve evaluations per minute ({args.repeats} repeats, "
                  f"load {os.getloadavg()[0]:.1f} at the end)")
    for (executor, nodes, workers), runs in results.items() if args.repeats else ():
        rates = [r["evaluations"] / r["seconds"] * 60 for r in runs]
        table.add_row(executor, str(nodes), str(workers), str(runs[0]["evaluations"]),
                      f"{statistics.median(r['seconds'] for r in runs):.0f}", f"{statistics.median(rates):.2f}",
                      ", ".join(f"{k} ×{v}" for k, v in runs[-1]["evaluated_on"].items()))
    if args.repeats:
        console.print(table)

    cluster = Cluster(2, args.out)
    try:
        fault = run_row(round_dir, "ray", 2, args.iterations, cluster.address, kill=(cluster, 1))
    finally:
        cluster.stop()
    console.print(f"node killed mid-run (2 nodes, 2 workers): {fault['evaluations']} evaluations archived, "
                  f"{fault['scored']} scored, {fault['retried']} retried after their worker or node died, "
                  f"{len(fault['failed'])} failed ({', '.join(fault['failed']) or 'none'}); evaluated on "
                  + ", ".join(f"{k} ×{v}" for k, v in fault["evaluated_on"].items()))


if __name__ == "__main__":
    main()
