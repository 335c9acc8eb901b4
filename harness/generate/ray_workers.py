"""The Ray side of `RayExecutor` (harness.generate.ray): the actor that generates shards,
what it reports, and the plugins it rebuilds.

Each actor is a `GenerationWorker`: it loads the coordinator's plugins afresh
(`PluginSetup`: built-ins, entry points, plugin files shipped by content, plugin objects
pickled) and a backend from the same `ModelSpec`, then generates the shards it is sent
and writes each as a Parquet file (`ShardFile`). It never sees the store. Ray itself is
imported only inside the actor.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from harness.errors import HarnessError
from harness.generate.executors import Shard, generate_shard

if TYPE_CHECKING:
    from harness.components.contracts import Backend
    from harness.components.plugin_manager import Plugins
    from harness.types import ModelSpec


# ---------------------------------------------------------------------------
# Plugins, as a worker rebuilds them
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PluginFile:
    """A `--plugin` file, shipped by content so that a node without the file can load it."""

    name: str
    path: str
    source: bytes


@dataclass(frozen=True)
class PluginSetup:
    """How to load, inside an actor, the plugins the coordinator loaded.

    Built-ins are always loaded; entry-point plugins load when `autoload` is on (the
    worker's environment must have them installed); plugin files travel by content;
    plugin objects registered directly are pickled (their module must be importable on
    the workers)."""

    files: tuple[PluginFile, ...] = ()
    autoload: bool = False
    objects: tuple[tuple[object, str], ...] = ()

    @classmethod
    def from_plugins(cls, plugins: Plugins) -> PluginSetup:
        files: list[PluginFile] = []
        objects: list[tuple[object, str]] = []
        autoload = False
        for name, info in plugins.infos.items():
            source = info.source
            if source == "builtin":
                continue
            if source.startswith("entry point"):
                autoload = True
            elif source.startswith("file"):
                module = plugins.manager.get_plugin(name)
                path = Path(getattr(module, "__file__", "") or "")
                files.append(PluginFile(name, str(path), path.read_bytes()))
            elif source == "direct":
                objects.append((plugins.manager.get_plugin(name), name))
            else:
                raise RuntimeError(
                    f"plugin {name!r} was loaded from {source!r}, which a Ray worker cannot reproduce"
                )
        return cls(tuple(files), autoload, tuple(objects))

    def load(self) -> Plugins:
        """A fresh plugin manager (called on the worker)."""
        from harness.components.plugin_manager import load_plugins

        paths = []
        for plugin in self.files:
            path = Path(plugin.path)
            if not (path.is_file() and path.read_bytes() == plugin.source):
                # Not on this node (or changed since): use the coordinator's copy, under the
                # same file name so the plugin keeps its name; by content, so copies are reused.
                digest = hashlib.sha256(plugin.source).hexdigest()[:16]
                path = Path(tempfile.gettempdir()) / "harness-plugin-files" / digest / path.name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(plugin.source)
            paths.append(path)
        return load_plugins(paths, autoload=self.autoload, trace=False, extra=list(self.objects))


# ---------------------------------------------------------------------------
# The Ray side: one actor per worker
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """What a worker reports once its backend is loaded."""

    pid: int
    host: str
    node_id: str
    checkpoint_hash: str
    torch_threads: int | None


@dataclass(frozen=True, slots=True)
class ShardFile:
    """A shard a worker finished and wrote as Parquet."""

    index: int
    path: str
    rows: int
    pid: int
    host: str


class GenerationWorker:
    """The body of a Ray actor: loads plugins and a backend once, then generates shards.

    It never receives the store's path: its only output is Parquet files."""

    def __init__(self) -> None:
        self.backend: Backend | None = None

    def setup(self, spec: ModelSpec, plugins: PluginSetup) -> WorkerInfo:
        import ray

        from harness.allocator import keep_freed_memory
        from harness.generate.backends import load_backend

        keep_freed_memory()  # as the CLI does in its own process
        with _plain_harness_errors():
            self.backend = load_backend(spec, plugins.load().registry)
        torch: ModuleType | None = sys.modules.get("torch")
        return WorkerInfo(
            pid=os.getpid(),
            host=socket.gethostname(),
            node_id=ray.get_runtime_context().get_node_id(),
            checkpoint_hash=self.backend.checkpoint_hash,
            torch_threads=torch.get_num_threads() if torch is not None else None,
        )

    def generate(self, shard: Shard, directory: str) -> ShardFile:
        import pyarrow.parquet as pq

        assert self.backend is not None, "setup() first"
        if not Path(directory).is_dir():
            raise HarnessError(
                f"shard directory {directory} does not exist on Ray worker {socket.gethostname()}: "
                "the store's directory must be on a filesystem every node mounts at the same path"
            )
        with _plain_harness_errors():
            table = generate_shard(self.backend, shard)
        final = Path(directory) / f"shard-{shard.index:06d}.parquet"
        partial = final.with_name(final.name + ".partial")
        pq.write_table(table, partial)
        os.replace(partial, final)  # the coordinator never sees half a file
        return ShardFile(shard.index, str(final), table.num_rows, os.getpid(), socket.gethostname())


@contextmanager
def _plain_harness_errors() -> Iterator[None]:
    """User mistakes raised on a worker reach the coordinator as a plain HarnessError: the
    subclasses take other constructor arguments than their message, so they do not unpickle."""
    try:
        yield
    except HarnessError as exc:
        raise HarnessError(f"on Ray worker {socket.gethostname()}: {exc}") from None
