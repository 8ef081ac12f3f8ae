"""The ``ray`` executor: each variant's sandbox run is a Ray task on whichever node has room.

- **Connecting.** ``[evolve.ray] address`` (``--ray-address``): ``"auto"`` or ``host:port`` joins a
  running cluster (``ray start --head`` on one machine, ``ray start --address HEAD:6379`` on the
  others); unset, a cluster of this machine alone is started for the run.
- **Nodes.** At start one check runs on every alive node, pinned to it: the sandbox backend the
  config asks for must be usable there (a node without the sandbox image is a one-line error naming
  the node and ``selfloop sandbox build``), and its selfloop core and sandbox must be the driver's
  (the payload's judge is the node's installed one). With ``backend = "auto"`` every node must
  reach the same answer, so that no variant is judged under a weaker sandbox than its siblings.
- **Inputs.** The checkpoint, the user's plugin directories and the paths options name are packed
  once each (``selfloop.core.shipping``), put in the object store, and unpacked once per node.
- **Tasks.** A task asks for ``cpus``, ``memory_mb`` and ``gpus``; at most ``[evolve] workers`` are in
  flight (the loop's threads hand them out). Each waits with ``ray.wait`` up to the sandbox timeout
  plus ``grace_s``, then is cancelled with ``force=True``, which kills its worker.
- **Faults.** A task whose worker or node dies (``WorkerCrashedError``, ``NodeDiedError``, an
  out-of-memory kill...) is submitted once more, to any node; a second death is the variant's
  recorded failure with the reason. Ray's own retries are off, so the count is this module's.
- **Peers.** While a Ray executor is open, the lifecycle's peer models train as Ray tasks too
  (``RayExecutor.train_peer``), each possibly on another node.

The judging (held-out scores, the model-dependence and gaming tests) stays on the driver: a node
returns the sandbox's result only, and the archive keeps its one writer.
"""

from __future__ import annotations

import os
import socket
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .shipping import Parcel, unpack_to
from .validate import run_payload

RAY_EXTRA = "pip install 'selfloop[ray]'"
# What a task's worker or node dying looks like from the driver: retried once, then a failure.
_DEATHS = ("WorkerCrashedError", "NodeDiedError", "OutOfMemoryError", "LocalRayletDiedError",
           "ObjectLostError", "OwnerDiedError")

_ACTIVE: RayExecutor | None = None  # the open executor, for peer training in this process


def require_ray(address: str | None = None):
    """Ray, imported to join ``address`` (None: a cluster of this machine alone is started)."""
    if "ray" not in sys.modules:  # both variables are read once, when Ray is imported
        if not address:  # a cluster of one node: Ray then takes 127.0.0.1 as its address, not the LAN's
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            # Ray runs its workers at nice 15; on the machine that also trains the round (at nice 0)
            # evaluations would starve. The raylet started here reads this.
            os.environ.setdefault("RAY_worker_niceness", "0")
        if address and address != "auto" and (os.environ.get("RAY_AUTH_TOKEN")
                                               or (Path.home() / ".ray" / "auth_token").is_file()):
            # `ray start` turns token authentication on when this user has a token; a driver that
            # joins by HOST:PORT (not "auto") is not told so and must be.
            os.environ.setdefault("RAY_AUTH_MODE", "token")
    try:
        import ray
    except ImportError:
        raise ConfigError(f"executor 'ray' needs Ray, which is not installed: {RAY_EXTRA}") from None
    return ray


def active() -> RayExecutor | None:
    """The Ray executor open in this process, if any (peers then train on the cluster)."""
    return _ACTIVE


class RayExecutor:
    name = "ray"

    def __init__(self, settings, sandbox_settings, *, log=None):
        global _ACTIVE
        ray = require_ray(settings.address)
        self.ray, self.settings, self.sandbox_settings = ray, settings, sandbox_settings
        self.log = log or (lambda message: None)
        self._parcels: dict[tuple, Any] = {}
        self.retried = 0
        self._owns = not ray.is_initialized()  # connected here: disconnected by close()
        if self._owns and settings.address and settings.address != "auto":
            _check_answers(settings.address)
        if self._owns:
            try:
                local = ({"num_cpus": settings.local_cpus, "_node_ip_address": "127.0.0.1"} if not settings.address
                         # a cluster on loopback addresses (127.0.0.2, ...: Ray rewrites 127.0.0.1 to
                         # the LAN's address when nodes are many): this driver is on the head's
                         else {"_node_ip_address": _host(settings.address)} if _on_loopback(settings.address)
                         else {})
                ray.init(address=settings.address or "local", include_dashboard=False, log_to_driver=False,
                         configure_logging=False, **local)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = settings.address or "a local cluster"
                raise ConfigError(f"ray: cannot connect to {where}: {str(exc).splitlines()[0]}") from None
        self.nodes = self._check_nodes()
        self._ips = {n["node"]: n["ip"] for n in self.nodes}
        # Made once: each remote function is exported to the cluster when it is first called.
        self._evaluate = ray.remote(num_cpus=settings.cpus, num_gpus=settings.gpus, max_retries=0,
                                    **({"memory": settings.memory_mb * 2**20} if settings.memory_mb else {})
                                    )(_evaluate_on_node)
        self._train_peer = ray.remote(max_retries=1)(_train_peer_on_node)
        _ACTIVE = self

    # --- the nodes ------------------------------------------------------------------------------

    def _check_nodes(self) -> list[dict[str, Any]]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        from selfloop.sandbox.image import manifest_digest

        alive = [n for n in self.ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
        if not alive:
            raise ConfigError("ray: the cluster has no alive node with a CPU")
        check = self.ray.remote(num_cpus=0)(_node_facts)
        refs = [check.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(self.sandbox_settings) for n in alive]
        facts = self.ray.get(refs, timeout=300)
        problems, backends = [], {f["backend"] for f in facts if f["backend"]}
        digest = manifest_digest()
        for node, fact in zip(alive, facts):
            where = f"ray node {node['NodeManagerAddress']} ({fact['host']}, id {node['NodeID'][:8]})"
            if fact["error"]:
                hint = ("" if "image" not in fact["error"] else " (on that node)"
                        if "selfloop sandbox build" in fact["error"] else "; run `selfloop sandbox build` there")
                problems.append(f"{where}: {fact['error']}{hint}")
            elif fact["digest"] != digest:
                problems.append(f"{where} runs another selfloop (its core or sandbox files differ from "
                                "this host's): install the same version there")
            elif len(backends) > 1 and fact["backend"] != "docker":
                problems.append(f"{where}: no usable Docker sandbox ({fact['why']}); run `selfloop sandbox "
                                "build` there, or set [sandbox] backend = \"process\" for every node")
        if problems:
            raise ConfigError(problems[0] + (f" (and {len(problems) - 1} more nodes)" if len(problems) > 1 else ""))
        return [{"node": n["NodeID"][:8], "ip": n["NodeManagerAddress"], "host": f["host"], "backend": f["backend"],
                 "cpus": n["Resources"].get("CPU", 0)} for n, f in zip(alive, facts)]

    # --- evaluations ----------------------------------------------------------------------------

    def evaluate(self, validator, files, *, changed, editable, threshold, baseline=False):
        placement: dict[str, Any] = {}

        def run(files, job, inputs, timeout_s):
            parcels = {name: self._parcel(path) for name, path in inputs.items()}
            return self._run(files, job, parcels, timeout_s, placement)

        verdict = validator.validate(files, changed=changed, editable=editable, threshold=threshold,
                                     baseline=baseline, run=run)
        verdict.sandbox.update({"executor": self.name, **placement})
        return verdict

    def _parcel(self, path: Path):
        """The object-store reference of ``path`` packed, made once per content."""
        path = Path(path)
        key = (str(path.resolve()), _signature(path))
        if key not in self._parcels:
            self._parcels[key] = self.ray.put(Parcel.of(path))
        return self._parcels[key]

    def _run(self, files, job, parcels, timeout_s, placement):
        from selfloop.sandbox.base import SandboxResult

        deadline = float(timeout_s or self.sandbox_settings.timeout_s) + self.settings.grace_s
        deaths = []
        for attempt in range(2):
            ref = self._evaluate.remote(self.sandbox_settings, files, job, list(parcels), list(parcels.values()), timeout_s)
            ready, _ = self.ray.wait([ref], timeout=deadline)
            if not ready:
                self.ray.cancel(ref, force=True)  # kills the worker, and the sandbox run with it
                return _failed(SandboxResult, "timeout",
                               f"executor: the evaluation ran past {deadline:.0f} s on the cluster; "
                               "its Ray worker was killed")
            try:
                result, where = self.ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a dead worker or node, or a bug on the node
                name = type(exc).__name__
                deadly = tuple(getattr(self.ray.exceptions, death) for death in _DEATHS)
                if not isinstance(exc, deadly):
                    return _failed(SandboxResult, "error", f"executor: the node raised {name}: "
                                   f"{_first_line(exc)}")
                deaths.append(f"{name}: {_first_line(exc)}")
                if attempt == 0:
                    self.retried += 1
                    self.log(f"ray: an evaluation's worker died ({deaths[-1]}); retrying it once")
                continue
            placement.update({**where, "ip": self._ips.get(where["node"], "a node that joined later"),
                              "retries": attempt})
            return result
        placement["retries"] = 1
        return _failed(SandboxResult, "error", "executor: the Ray worker evaluating this variant died "
                       f"twice ({'; then '.join(deaths)})")

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "address": self.settings.address or "local", "nodes": self.nodes,
                "retried": self.retried}

    def close(self) -> None:
        global _ACTIVE
        if _ACTIVE is self:
            _ACTIVE = None
        self._parcels.clear()
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()

    # --- peers ----------------------------------------------------------------------------------

    def train_peer(self, job) -> Future:
        """``selfloop.core.peers.train_peer(job)`` as a Ray task; the future's result is its metrics,
        and the trained peer is unpacked into ``job.model_out`` on this host."""
        parcels = {"model_in": self._parcel(Path(job.model_in)), "examples": self._parcel(Path(job.examples)),
                   **{f"plugins{k}": self._parcel(Path(d)) for k, d in enumerate(job.plugins_dirs)}}
        ref = self._train_peer.options(num_cpus=job.threads or 1).remote(job, list(parcels), list(parcels.values()))
        done: Future = Future()

        def unpacked(inner: Future) -> None:
            try:
                metrics, model = inner.result()
                unpack_to(model, Path(job.model_out))
                done.set_result(metrics)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                done.set_exception(exc)

        ref.future().add_done_callback(unpacked)
        done.cancel_task = lambda: self.ray.cancel(ref, force=True)
        return done


# --- what runs on the nodes -----------------------------------------------------------------------

_NODE_SANDBOX: dict[str, Any] = {}


def _node_facts(sandbox_settings) -> dict[str, Any]:
    from selfloop.sandbox import choose_backend
    from selfloop.sandbox.image import manifest_digest

    facts = {"host": socket.gethostname(), "digest": manifest_digest(), "error": None,
             "backend": None, "why": None}
    try:
        sandbox = choose_backend(sandbox_settings)
        facts["backend"], facts["why"] = sandbox.name, getattr(sandbox, "reason", None)
    except Exception as exc:  # noqa: BLE001 - reported, with the node's name, by the driver
        facts["error"] = _first_line(exc)
    return facts


def _evaluate_on_node(sandbox_settings, files, job, names, parcels, timeout_s):
    import ray

    key = sandbox_settings.model_dump_json()
    if key not in _NODE_SANDBOX:  # one backend per worker process, as the local loop has one
        from selfloop.sandbox import choose_backend

        _NODE_SANDBOX[key] = choose_backend(sandbox_settings)
    inputs = {name: parcel.open() for name, parcel in zip(names, ray.get(parcels))}
    result = run_payload(_NODE_SANDBOX[key], files, job, inputs, timeout_s)
    context = ray.get_runtime_context()
    return result, {"node": context.get_node_id()[:8], "host": socket.gethostname(), "pid": os.getpid()}


def _train_peer_on_node(job, names, parcels):
    import dataclasses
    import tempfile

    import ray

    from .peers import train_peer

    local = {name: parcel.open() for name, parcel in zip(names, ray.get(parcels))}
    with tempfile.TemporaryDirectory(prefix="selfloop-peer-") as tmp:
        moved = dataclasses.replace(
            job, model_in=str(local["model_in"]), examples=str(local["examples"]),
            plugins_dirs=[str(local[f"plugins{k}"]) for k in range(len(job.plugins_dirs))],
            model_out=str(Path(tmp) / "model"), workdir=str(Path(tmp) / "work"))
        metrics = train_peer(moved)
        node = ray.get_runtime_context().get_node_id()[:8]
        return {**metrics, "node": node}, Parcel.of(moved.model_out).data


# --- helpers ------------------------------------------------------------------------------------


def _check_answers(address: str) -> None:
    """A one-line error now, rather than Ray's minutes of retries, when nothing listens there."""
    host, port = _host(address), address.rpartition(":")[2]
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"ray: nothing answers at {address} ({exc}); start the head node there with "
                          "`ray start --head`, or leave --ray-address out to start a cluster here") from None


def _host(address: str) -> str:
    return address.removeprefix("ray://").rpartition(":")[0]


def _on_loopback(address: str) -> bool:
    """A cluster at a loopback address (nodes of this machine alone)."""
    return _host(address) in ("localhost", "::1") or _host(address).startswith("127.")


def _failed(result_type, status: str, reason: str):
    return result_type(status=status, exit_code=None, result=None, stdout="", stderr="",
                       stdout_truncated=False, stderr_truncated=False, seconds=0.0, backend="ray",
                       reason=reason)


def _signature(path: Path) -> tuple:
    """A cheap fingerprint of a path's content: names, sizes and modification times."""
    items = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in items)


def _first_line(exc: BaseException) -> str:
    exc = getattr(exc, "cause", None) or exc  # a RayTaskError: the exception raised on the node
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__

