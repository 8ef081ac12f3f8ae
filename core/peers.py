"""Peer models: independently seeded copies of the policy, trained beside it on the same data.

Lee et al. (2025) keep a self-label only when independently trained models agree on it: one model
makes the same mistake every time it is asked, two models seldom make the same one. Measured here
at difficulty 8 of the embedded task, on two base models that were each about 72% right: the
labels both gave agreed on 55% of the problems and were 98% right there, where every filter asking one model again (samples,
offsets, swapped operands, its own confidence) stayed at 87-92%.

A round's optimizer trains the policy in this process and each peer in a worker process of its own
(started with spawn, one torch thread each): with a core per model, peers cost little wall-clock.
While evolve's Ray executor is open, each peer is a Ray task instead, on any node of the cluster
(``selfloop.core.ray_executor``).
Peers never see anything the policy does not: the same training set, the same optimizer, only
another seed. Selectors reach them as ``policy.peers``.
"""

from __future__ import annotations

import os
import random
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from .components import build_components
from .config import RunConfig
from .errors import SelfloopError, StageError
from .models import save_policy
from .registry import load_registry
from .rundir import load_examples, save_examples
from .types import Example, Policy


@dataclass
class PeerJob:
    """What a worker needs to train one peer for one round (all plain data: it crosses processes)."""

    config: dict[str, Any]
    plugins_dirs: list[str]
    round_index: int
    seed: int
    threads: int | None
    model_in: str
    model_out: str
    examples: str
    workdir: str


def train_peer(job: PeerJob) -> dict[str, Any]:
    """In a worker: load the peer, run the configured optimizer on the round's data, save it."""
    os.environ["SELFLOOP_PROGRESS"] = "0"  # one progress bar per round: the policy's
    import torch

    if job.threads:
        torch.set_num_threads(job.threads)
    config = RunConfig.model_validate(job.config)
    c = build_components(config, load_registry(job.plugins_dirs))
    rng = random.Random(job.seed)
    torch.manual_seed(rng.randrange(2**31))
    result = c.optimizer.component.optimize(
        c.model.component.load(Path(job.model_in)), load_examples(Path(job.examples)), task=c.task.component,
        generator=c.generator.component, rewarder=c.rewarder.component, rng=rng,
        workdir=Path(job.workdir), round_index=job.round_index)
    save_policy(result.policy, job.model_out)
    return {**result.metrics, "threads": torch.get_num_threads(), "peak_rss_mib": _own_peak_rss_mib()}


def _own_peak_rss_mib() -> float | None:
    """This process's peak resident memory since its exec, MiB (Linux: VmHWM).

    Not getrusage: a spawned worker's ru_maxrss still counts the parent it was forked from.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class PeerTraining:
    """Trains a policy's peers in worker processes while the caller trains the policy.

    ``with PeerTraining(...) as peers: <train the policy>`` then ``peers.policies`` and
    ``peers.metrics``. A peer that fails raises a StageError naming the optimizer and the peer.
    """

    def __init__(self, peers: list[Policy], examples: list[Example], *, components, round_index: int,
                 seed: int, workdir: Path, threads: int | None):
        self.peers, self.examples = peers, examples
        self.components, self.round_index = components, round_index
        self.seed, self.workdir, self.threads = seed, Path(workdir), threads
        self.policies: list[Policy] = []
        self.metrics: list[dict[str, Any]] = []
        self._pool = None
        self._futures = []

    def __enter__(self) -> Self:
        if not self.peers:
            return self
        import multiprocessing

        self.workdir.mkdir(parents=True, exist_ok=True)
        data = self.workdir / "peer_training_set.jsonl"
        save_examples(self.examples, data)
        rng = random.Random(self.seed)
        config = self.components.config.model_dump(mode="json")
        jobs = []
        for k, peer in enumerate(self.peers, start=1):
            model_in = save_policy(peer, self.workdir / f"peer_{k}_in")
            jobs.append(PeerJob(
                config=config,
                plugins_dirs=list(self.components.plugins_dirs), round_index=self.round_index,
                seed=rng.randrange(2**31), threads=self.threads, model_in=str(model_in),
                model_out=str(self.workdir / f"peer_{k}"), examples=str(data),
                workdir=str(self.workdir / f"peer_{k}_work")))
        from .ray_executor import active

        cluster = active()
        if cluster is not None:  # evolve runs on a Ray cluster: so do the peers, each on any node
            self._futures = [cluster.train_peer(job) for job in jobs]
            self._pool = cluster
            return self
        self._pool = ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn"))
        self._futures = [self._pool.submit(train_peer, job) for job in jobs]
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._pool is None:
            return
        if exc_type is not None:  # the policy's training failed or was interrupted: stop the peers
            self._stop()
            return
        part = self.components.optimizer
        provider = self.components.model.component
        for k, future in enumerate(self._futures, start=1):
            try:
                self.metrics.append(future.result())
                self.policies.append(provider.load(self.workdir / f"peer_{k}"))
            except BaseException as error:
                self._stop()
                if isinstance(error, (SelfloopError, KeyboardInterrupt)):
                    raise
                raise StageError("optimize", f"{part.name} (peer {k})", part.plugin, error) from error
        if isinstance(self._pool, ProcessPoolExecutor):
            self._pool.shutdown(wait=True)
        shutil.rmtree(self.workdir, ignore_errors=True)  # the peers now live in memory (and, saved, in the checkpoint)

    def _stop(self) -> None:
        if not isinstance(self._pool, ProcessPoolExecutor):  # Ray tasks
            for future in self._futures:
                future.cancel_task()
            return
        for process in list((getattr(self._pool, "_processes", None) or {}).values()):
            process.terminate()
        self._pool.shutdown(wait=False, cancel_futures=True)
