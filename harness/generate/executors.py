"""Where missing generations are made: shards, and the executors that run them.

`generate_with_cache` decides *what* to generate (the missing jobs, their cache keys and
per-sample seeds) and commits each finished shard; an executor decides *where* the
shards run:

- `LocalExecutor` calls the already loaded backend, shard after shard (the default);
- `RayExecutor` (`harness.generate.ray`) sends shards to Ray actors, each holding its
  own backend.

Shards are the same chunks whichever executor runs them, so every executor stores
exactly what a single-process run stores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from harness.components.contracts import Backend, Progress
    from harness.types import Completion, GenerationConfig


SHARD_SCHEMA = pa.schema(
    [
        ("cache_key", pa.string()),
        ("text", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("finish_reason", pa.string()),
        ("latency_s", pa.float64()),
    ]
)
"""The columns of a finished shard; the coordinator adds checkpoint hash and time."""


# ---------------------------------------------------------------------------
# Shards: what the coordinator sends
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShardGroup:
    """Prompts of one shard that share decoding parameters (one `backend.generate` call)."""

    config: GenerationConfig
    keys: tuple[str, ...]
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Shard:
    """One chunk of missing generations: generated, then committed, as one unit."""

    index: int
    groups: tuple[ShardGroup, ...]

    @property
    def keys(self) -> list[str]:
        return [key for group in self.groups for key in group.keys]

    def __len__(self) -> int:
        return sum(len(group.keys) for group in self.groups)


def completions_table(keys: Sequence[str], completions: Sequence[Completion]) -> pa.Table:
    """Finished generations as an Arrow table in `SHARD_SCHEMA`."""
    return pa.table(
        {
            "cache_key": list(keys),
            "text": [c.text for c in completions],
            "prompt_tokens": [int(c.prompt_tokens) for c in completions],
            "completion_tokens": [int(c.completion_tokens) for c in completions],
            "finish_reason": [c.finish_reason for c in completions],
            "latency_s": [float(c.latency_s) for c in completions],
        },
        schema=SHARD_SCHEMA,
    )


def generate_shard(backend: Backend, shard: Shard, progress: Progress | None = None) -> pa.Table:
    """Run one shard through a backend, group by group, and check it answered every prompt."""
    keys: list[str] = []
    completions: list[Completion] = []
    for group in shard.groups:
        out = backend.generate(list(group.prompts), group.config, seeds=list(group.seeds), progress=progress)
        if len(out) != len(group.prompts):
            raise RuntimeError(
                f"backend {backend.name!r} returned {len(out)} completions for {len(group.prompts)} prompts"
            )
        keys.extend(group.keys)
        completions.extend(out)
    return completions_table(keys, completions)


# ---------------------------------------------------------------------------
# Executors
# ---------------------------------------------------------------------------


class Executor(ABC):
    """Runs shards of generation jobs somewhere and hands them back as they finish."""

    @abstractmethod
    def run(
        self,
        backend: Backend,
        shards: Sequence[Shard],
        *,
        scratch: Path,
        progress: Progress,
        log: Callable[[str], None],
    ) -> Generator[tuple[Shard, pa.Table], None, None]:
        """Yield (shard, table in `SHARD_SCHEMA`) for each shard as it finishes, in any order.

        The caller commits a shard before asking for the next one. `scratch` is a
        directory the executor may use for files (beside the store); it must leave
        nothing there. Closing the iterator early abandons the shards not yet yielded."""

    def shard_size(self, chunk_size: int, prompts: int) -> int:
        """Prompts per shard when `prompts` generations are missing, at most `chunk_size`
        (the commit interval). One process takes whole chunks: the larger the shard, the
        larger the backend's batches can be."""
        return chunk_size

    def close(self) -> None:
        """Release what the executor holds (workers, cluster connections)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class LocalExecutor(Executor):
    """Generates with the coordinator's own backend, one shard after another, in order."""

    def run(
        self,
        backend: Backend,
        shards: Sequence[Shard],
        *,
        scratch: Path,
        progress: Progress,
        log: Callable[[str], None],
    ) -> Generator[tuple[Shard, pa.Table], None, None]:
        for shard in shards:
            yield shard, generate_shard(backend, shard, progress)


