"""Generation on Ray actors: `RayExecutor`, and the workers it starts.

`RayExecutor` sends shards to Ray actors, each holding its own backend, loaded from the
same `ModelSpec` through a plugin registry built afresh inside the actor (plugin files
are shipped by content, so a node without the file can load it). The actors' side is
`harness.generate.ray_workers`; this module is the coordinator's.

    from harness.generate.ray import RayExecutor
    with RayExecutor(plugins, workers=2) as executor:
        evaluate(suite, spec, store, plugins, EvalOptions(executor=executor))

Ray workers never see the store. Each writes its finished shard as a Parquet file into
a scratch directory beside the store; the coordinator reads it, bulk-inserts it in one
transaction (one shard = one commit, as with local chunks) and deletes it. Prompts,
cache keys and seeds all come from the coordinator, and shards are the same chunks a
local run would make, so a Ray run stores exactly what a single-process run stores.

Log-likelihood scoring (perplexity) stays on the coordinator's backend: it is one
forward pass per sample, cheap next to generation, and keeping it there gives the very
numbers a single-process run gives.

Ray is an optional dependency (`pip install 'harness-loop[ray]'`); this module imports
it only when a `RayExecutor` is made.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import socket
import uuid
from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from harness.errors import ConfigError, HarnessError
from harness.generate.executors import SHARD_SCHEMA, Executor, Shard
from harness.generate.ray_workers import GenerationWorker, PluginFile, PluginSetup, ShardFile, WorkerInfo
from harness.types import spec_record

if TYPE_CHECKING:
    from harness.components.contracts import Backend, Progress
    from harness.components.plugin_manager import Plugins


RAY_EXTRA = "pip install 'harness-loop[ray]'"
"""How to get Ray: the extra pins a version this module was tested with."""


_FORWARDED_ENV = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_HUB_DISABLE_PROGRESS_BARS",
    "TRANSFORMERS_VERBOSITY",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS",
    "TOKENIZERS_PARALLELISM",
)
"""Set on the coordinator, these reach the actors too: a worker must not go to a model
hub either, nor print progress bars nobody sees."""

_LOCAL_OBJECT_STORE_BYTES = 128 * 1024**2
"""Shards travel as files, not objects: a small object store leaves memory to models."""

_CONNECT_TIMEOUT_S = 10.0
"""How long a cluster's head may take to accept a TCP connection before we give up."""

_IN_FLIGHT_PER_WORKER = 2
"""A second queued shard keeps an actor busy while the coordinator commits the first."""


def _local_cpus() -> int:
    """The cores this process may use (a container's limit, not the host's count)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


def _check_reachable(address: str) -> None:
    """Fail in seconds where nothing listens at HOST:PORT: Ray itself retries for minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConfigError(
            f"cannot reach the Ray cluster at {address!r} ({exc}): is `ray start --head` running "
            "there, and is the port open from this machine?"
        ) from None


def import_ray() -> ModuleType:
    """Ray, or a clear error naming the extra that installs it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(
            f"--ray needs Ray, which is not installed ({exc}): {RAY_EXTRA} (the harness's ray extra)"
        ) from None
    return ray


@dataclass
class _Pool:
    key: str
    actors: list[Any] = field(default_factory=list)
    infos: list[WorkerInfo] = field(default_factory=list)


class RayExecutor(Executor):
    """Generates on Ray actors: data-parallel, one backend per actor.

    `address` None starts a new Ray instance on this machine (unless this process is
    already connected to one, which is then used and left running, or $RAY_ADDRESS names
    a cluster); "auto" or "HOST:PORT" joins an existing cluster. `workers` defaults to
    what the cluster can hold: one per GPU when it has GPUs, else one per
    `threads_per_worker` CPUs.
    `on_shard` is called on the coordinator with each shard file before it is committed.
    """

    def __init__(
        self,
        plugins: Plugins | PluginSetup,
        *,
        address: str | None = None,
        workers: int | None = None,
        threads_per_worker: int = 1,
        gpus_per_worker: float | None = None,
        on_shard: Callable[[ShardFile], None] | None = None,
    ) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        if threads_per_worker < 1:
            raise ConfigError(f"threads_per_worker must be at least 1, got {threads_per_worker}")
        self._ray = import_ray()
        self.plugins = plugins if isinstance(plugins, PluginSetup) else PluginSetup.from_plugins(plugins)
        self.address = address
        self.workers = workers
        self.threads_per_worker = threads_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.on_shard = on_shard
        self._owns_ray = False
        self._started = False
        self._pool: _Pool | None = None

    # -- the cluster ------------------------------------------------------------

    def start(self) -> None:
        """Connect to the cluster, or start a local one (once)."""
        if self._started:
            return
        ray = self._ray
        if not ray.is_initialized():
            options: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,  # workers' own output would interleave with our progress bars
                "logging_level": logging.WARNING,
            }
            # $RAY_ADDRESS is Ray's own way to name a cluster; honour it as Ray does.
            address = self.address or os.environ.get("RAY_ADDRESS") or None
            if address is None:
                # "local": a new instance, even where `ray start` left one running on this
                # machine (Ray would join that one, and refuse num_cpus for it).
                options["address"] = "local"
                options["num_cpus"] = _local_cpus()
                options["object_store_memory"] = _LOCAL_OBJECT_STORE_BYTES
            else:
                _check_reachable(address)
                options["address"] = address
            try:
                ray.init(**options)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
                hint = (
                    "start one with `ray start --head`, or leave out --ray-address (and $RAY_ADDRESS) "
                    "to run on this machine"
                    if address
                    else "see Ray's message"
                )
                raise ConfigError(f"cannot connect to {where}: {exc}; {hint}") from None
            self._owns_ray = True
        self._started = True
        try:
            self._capacity()  # a --workers the cluster cannot hold is an error before anything runs
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> RayExecutor:
        self.start()
        return self

    def close(self) -> None:
        self._stop_pool()
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False
        self._started = False

    # -- workers ----------------------------------------------------------------

    def _capacity(self) -> tuple[int, float]:
        """(how many workers fit in the cluster, GPUs per worker)."""
        resources = self._ray.cluster_resources()
        cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
        per_gpu = self.gpus_per_worker if self.gpus_per_worker is not None else (1.0 if gpus >= 1 else 0.0)
        fit = int(cpus // self.threads_per_worker)
        if per_gpu:
            fit = min(fit, int(gpus // per_gpu))
        if self.workers is not None and self.workers > fit:
            wanted = f"{self.threads_per_worker} CPU" + (f" and {per_gpu:g} GPU" if per_gpu else "")
            raise ConfigError(
                f"--workers {self.workers} needs {wanted} per worker, and the Ray cluster has "
                f"{cpus:g} CPUs and {gpus:g} GPUs: ask for at most {fit} workers, or add nodes"
            )
        if fit < 1:
            raise ConfigError(f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs: no room for one worker")
        return fit, per_gpu

    def _env(self) -> dict[str, str]:
        threads = str(self.threads_per_worker)
        env = {name: os.environ[name] for name in _FORWARDED_ENV if name in os.environ}
        # Read by torch (and BLAS) when the worker imports it: one thread per reserved CPU,
        # so that actors sharing a node do not fight over cores.
        env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)
        return env

    def shard_size(self, chunk_size: int, prompts: int) -> int:
        """Small enough that every worker gets a shard, at most `chunk_size`."""
        workers = self.workers or self._capacity()[0]
        return max(1, min(chunk_size, math.ceil(prompts / max(workers, 1))))

    def _ensure_pool(self, backend: Backend, size: int, log: Callable[[str], None]) -> _Pool:
        ray = self._ray
        spec = backend.spec
        key = json.dumps(
            spec_record(spec),
            sort_keys=True,
            default=str,
        )
        if self._pool is not None and self._pool.key != key:
            self._stop_pool()  # another model: one set of models in memory at a time
        pool = self._pool or _Pool(key)
        self._pool = pool
        fit, per_gpu = self._capacity()
        target = min(self.workers or fit, size)
        if len(pool.actors) >= target:
            return pool
        remote = ray.remote(GenerationWorker).options(
            num_cpus=self.threads_per_worker,
            num_gpus=per_gpu,
            runtime_env={"env_vars": self._env()},
        )
        new = [remote.remote() for _ in range(target - len(pool.actors))]
        log(f"starting {len(new)} Ray worker(s) for {spec.backend}:{spec.path}")
        try:
            infos = [self._get(ref) for ref in [actor.setup.remote(spec, self.plugins) for actor in new]]
            for info in infos:
                if info.checkpoint_hash != backend.checkpoint_hash:
                    raise HarnessError(
                        f"Ray worker on {info.host} loaded checkpoint {info.checkpoint_hash[:12]} but "
                        f"the coordinator has {backend.checkpoint_hash[:12]} for {spec.path!r}: every "
                        "node must see the same model files at the same path"
                    )
        except BaseException:
            for actor in new:
                self._ray.kill(actor)
            raise
        pool.actors.extend(new)
        pool.infos.extend(infos)
        nodes = len({info.node_id for info in pool.infos})
        log(f"{len(pool.actors)} Ray worker(s) ready on {nodes} node(s)")
        return pool

    def _stop_pool(self) -> None:
        if self._pool is None:
            return
        for actor in self._pool.actors:
            self._ray.kill(actor)
        self._pool = None

    @property
    def worker_infos(self) -> list[WorkerInfo]:
        """The workers now running (empty before the first shard and after close)."""
        return list(self._pool.infos) if self._pool else []

    def _get(self, ref: Any) -> Any:
        """A task's result; a worker's exception is raised again as itself."""
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if not isinstance(cause, Exception):
                raise
            # The original type keeps HarnessError's one-line treatment in the CLI; the note
            # keeps the worker's traceback for bugs.
            cause.add_note(f"raised on a Ray worker:\n{exc}")
            raise cause from None
        except ray.exceptions.RayActorError as exc:
            raise RuntimeError(f"a Ray worker died: {exc}") from exc

    # -- running shards ---------------------------------------------------------

    def run(
        self,
        backend: Backend,
        shards: Sequence[Shard],
        *,
        scratch: Path,
        progress: Progress,
        log: Callable[[str], None],
    ) -> Generator[tuple[Shard, pa.Table], None, None]:
        import pyarrow.parquet as pq

        if not shards:
            return
        self.start()
        pool = self._ensure_pool(backend, len(shards), log)
        scratch = scratch.resolve()  # workers run elsewhere, in another working directory
        # A previous coordinator that was killed may have left shards: the store's writer
        # lock says no one else is using this directory, so they are stale.
        if scratch.exists():
            shutil.rmtree(scratch)
        directory = scratch / uuid.uuid4().hex
        directory.mkdir(parents=True)
        waiting = deque(shards)
        running: dict[Any, tuple[Shard, Any]] = {}

        def submit(actor: Any) -> None:
            shard = waiting.popleft()
            running[actor.generate.remote(shard, str(directory))] = (shard, actor)

        finished = False
        try:
            for _ in range(_IN_FLIGHT_PER_WORKER):
                for actor in pool.actors:
                    if waiting:
                        submit(actor)
            while running:
                ready, _ = self._ray.wait(list(running), num_returns=1)
                shard, actor = running.pop(ready[0])
                done: ShardFile = self._get(ready[0])
                if waiting:
                    submit(actor)  # the worker that finished first is free first
                path = Path(done.path)
                if not path.is_file():
                    raise HarnessError(
                        f"Ray worker on {done.host} wrote shard {path}, which the coordinator on "
                        f"{socket.gethostname()} cannot see: the store's directory must be on a "
                        "filesystem every node mounts at the same path"
                    )
                table = pq.read_table(path, schema=SHARD_SCHEMA)
                if self.on_shard is not None:
                    self.on_shard(done)
                yield shard, table
                path.unlink()  # committed: the store has it now
                progress(len(shard))
            finished = True
        finally:
            if not finished:
                # Abandoned mid-way (error, interrupt): queued and running shards would go
                # on writing files no one reads; stop the workers.
                self._stop_pool()
            # Only scratch files are left to remove: failing at that must not hide the
            # run's own outcome (the next run removes what is left).
            shutil.rmtree(scratch, ignore_errors=True)


__all__ = ["RAY_EXTRA", "GenerationWorker", "PluginFile", "PluginSetup", "RayExecutor", "ShardFile", "WorkerInfo", "import_ray"]
