"""The ``ray`` executor on a real local Ray cluster (2 CPUs, loopback only): evaluations as Ray
tasks, the nodes named in every record, a worker killed mid-evaluation retried once and, killed
again, recorded as that variant's failure while the run goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from evolve_fixtures import CopyTrainer, make_checkpoint, make_config, make_surface
from selfloop.core.errors import ConfigError
from selfloop.core.evolve import Evolution
from selfloop.core.registry import load_registry

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # the local cluster on loopback only
ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'selfloop[ray]')")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ray-ckpt") / "ckpt")


def evolution(tmp_path, ckpt, **evolve):
    from selfloop.core.ray_executor import RayExecutor

    surface = make_surface(tmp_path / "surface")
    config = make_config(executor="ray", **evolve)
    registry = load_registry([surface])
    executor = RayExecutor(config.evolve.ray, config.sandbox)
    return Evolution(config, archive_path=tmp_path / "A", out=tmp_path / "A.run", sandbox=None,
                     registry=registry, trainer=lambda config: CopyTrainer(ckpt),
                     proposer=registry.create("proposer", "mutation", {}),
                     parent_selector=registry.create("parent_selector", "dgm", {}), seed_dir=surface,
                     executor=executor)


def evaluation_workers() -> list[int]:
    """Pids of this test cluster's Ray workers running an evaluation now (Ray titles a busy worker
    ``ray::<task>``; the workers are children of the raylets of this cluster's nodes)."""
    ours = {f"--node_id={n['NodeID']}" for n in ray.nodes()}
    rows = [line.split(None, 2) for line in subprocess.run(
        ["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True, check=False).stdout.splitlines()]
    raylets = {pid for pid, _, args in rows if "raylet" in args and ours & set(args.split())}
    return [int(pid) for pid, ppid, args in rows if ppid in raylets and "ray::_evaluate_on_node" in args]


class Killer(threading.Thread):
    """Kills (SIGKILL) the first ``times`` evaluation workers seen once the seed's baseline is
    journalled, so that an iteration's evaluation, not the seed's, dies."""

    def __init__(self, journal, times: int):
        super().__init__(daemon=True)
        self.journal, self.times, self.killed, self.stop = journal, times, [], False

    def run(self):
        while not self.stop and len(self.killed) < self.times:
            if self.journal.exists() and '"baseline"' in self.journal.read_text():
                for pid in evaluation_workers():
                    if pid not in self.killed and len(self.killed) < self.times:
                        os.kill(pid, signal.SIGKILL)
                        self.killed.append(pid)
            time.sleep(0.1)


def test_evolve_on_ray_archives_every_variant_and_names_its_node(cluster, tmp_path, ckpt):
    run = evolution(tmp_path, ckpt, iterations=3, workers=2)
    run.run()
    variants = run.archive.list()
    assert len(variants) == 4  # the seed and three iterations
    nodes = {n["node"] for n in run.executor.describe()["nodes"]}
    for v in variants:
        assert v.meta["sandbox"]["executor"] == "ray"
        assert v.meta["sandbox"]["node"] in nodes, v.meta["sandbox"]
        assert v.meta["sandbox"]["retries"] == 0
    assert run.archive.get("v0").scores.get("score") is not None  # the seed was judged on the driver
    placement = run.placement()
    assert placement["executor"] == "ray" and sum(placement["evaluated_on"].values()) == 4


def run_killing(tmp_path, ckpt, times: int):
    """Two iterations, one at a time, with the first ``times`` evaluation workers after the seed's killed."""
    run = evolution(tmp_path, ckpt, iterations=2, workers=1)
    killer = Killer(tmp_path / "A.run" / "journal.jsonl", times=times)
    killer.start()
    run.run()
    killer.stop = True
    assert len(killer.killed) == times
    return run


def test_a_worker_killed_mid_evaluation_is_retried_once(cluster, tmp_path, ckpt):
    run = run_killing(tmp_path, ckpt, times=1)
    variants = run.archive.list()
    assert len(variants) == 3
    retried = [v for v in variants if v.meta["sandbox"].get("retries") == 1]
    assert len(retried) == 1 and retried[0].scores.get("score") is not None  # evaluated on the retry
    assert run.executor.retried == 1


def test_a_worker_killed_twice_fails_that_variant_only(cluster, tmp_path, ckpt):
    run = run_killing(tmp_path, ckpt, times=2)
    variants = run.archive.list()
    assert len(variants) == 3  # the run went on: the other iteration was evaluated
    failed = [v for v in variants if any("died twice" in r for r in v.meta.get("reasons", []))]
    assert len(failed) == 1 and failed[0].status == "rejected"
    assert "WorkerCrashedError" in failed[0].meta["reasons"][0]
    assert sum(1 for v in variants if v.scores.get("score") is not None) == 2


def test_a_node_without_the_sandbox_it_needs_is_a_one_line_error_naming_it(cluster, tmp_path):
    from selfloop.core.ray_executor import RayExecutor

    config = make_config(executor="ray")
    sandbox = config.sandbox.model_copy(update={"backend": "docker", "image": "selfloop-sandbox:no-such-tag"})
    with pytest.raises(ConfigError) as caught:
        RayExecutor(config.evolve.ray, sandbox)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("ray node 127.0.0.1")
    if "is missing" in message:  # a Docker engine answered: the image is what is missing
        assert "selfloop sandbox build" in message


def test_without_ray_the_executor_is_a_one_line_error_naming_the_extra(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from selfloop.core.cli import main\n"
            "sys.argv = ['selfloop', 'evolve', '--executor', 'ray', '--iterations', '1', '--archive', 'A']\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120, check=False)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "selfloop[ray]" in lines[0], done.stderr
    assert not (tmp_path / "A").exists()  # nothing was started



def test_peers_train_as_ray_tasks_while_the_executor_is_open(cluster, tmp_path):
    import random

    import torch
    from selfloop.core.components import build_components
    from selfloop.core.config import load_config
    from selfloop.core.peers import PeerTraining
    from selfloop.core.ray_executor import RayExecutor
    from selfloop.core.types import Example
    from test_lifecycle_run import TINY

    path = tmp_path / "peers.toml"
    path.write_text(TINY.replace("peers = 0 ", "peers = 1 "))
    config = load_config(path)
    components = build_components(config, load_registry([]))
    policy = components.model.component.create()
    assert len(policy.peers) == 1
    before = [p.detach().clone() for p in policy.peers[0].model.parameters()]
    examples = [Example(p.prompt, p.answer, d, "labelled")
                for d in (1, 2) for p in components.task.component.problems(d, 20, random.Random(d))]
    executor = RayExecutor(config.evolve.ray, config.sandbox)
    try:
        with PeerTraining(policy.peers, examples, components=components, round_index=0, seed=1,
                          workdir=tmp_path / "peers", threads=1) as peers:
            pass  # the policy would train here
    finally:
        executor.close()
    assert len(peers.policies) == 1 and peers.metrics[0]["steps"] == 30
    assert peers.metrics[0]["node"] in {n["node"] for n in executor.nodes}  # it ran as a Ray task
    after = list(peers.policies[0].model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))  # trained, and brought back


def test_an_evaluation_past_its_deadline_is_cancelled_and_its_worker_killed(cluster, tmp_path, ckpt):
    run = evolution(tmp_path, ckpt, iterations=0)
    run.executor.settings = run.executor.settings.model_copy(update={"grace_s": 0.01})
    run.config.sandbox.timeout_s = 1.0  # the deadline: 1.01 s, less than a worker needs to start and run
    run.run()
    seed = run.archive.get("v0")
    assert seed.meta["sandbox"]["status"] == "timeout"
    assert any("ran past 1 s on the cluster; its Ray worker was killed" in r for r in seed.meta["reasons"])
    time.sleep(2)
    assert evaluation_workers() == []  # force-cancelled: no worker is still running it


@pytest.mark.docker
def test_each_node_sandboxes_in_its_own_docker_engine(cluster, tmp_path, ckpt):
    from selfloop.sandbox.docker_backend import DockerSandbox

    usable, why = DockerSandbox.availability(make_config().sandbox)
    if not usable:
        pytest.skip(why)
    run = evolution(tmp_path, ckpt, iterations=1)
    run.executor.sandbox_settings = run.executor.sandbox_settings.model_copy(update={"backend": "docker"})
    run.run()
    for v in run.archive.list():
        assert v.meta["sandbox"]["backend"] == "docker" and v.meta["sandbox"]["executor"] == "ray"
    assert run.archive.get("v0").scores.get("score") is not None
