"""What every reader of the store shares: the store it reads, one connection for a
series of questions, and resolving `latest` / `latest~N` references."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, Self

from harness.store import Store

if TYPE_CHECKING:
    pass


LATEST = re.compile(r"^latest(?:~(\d+))?$")
"""`latest`, or `latest~N`: the N-th before the latest."""


class MetricLookup(Protocol):
    """Finds a metric plugin by name: the plugin `Registry` (kept abstract here so that the
    query layer, which the contracts name, does not depend on the registry)."""

    def metric(self, name: str, where: str = "") -> Any: ...


class StoreReader:
    """The store a series of read-only questions is asked of."""

    def __init__(self, store: Store, registry: MetricLookup | None = None):
        self.store = store
        self.registry = registry

    @contextmanager
    def session(self) -> Iterator[Self]:
        """Keep one connection open for a series of queries (a report's build)."""
        with self.store.connect():
            yield self

    def has_table(self, name: str) -> bool:
        return bool(
            self._scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
            )
        )

    def _scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        # Fetches every row, so that no half-read result is left on a shared connection
        # (DuckDB refuses the next query on it).
        rows = self.store.query(sql, params)
        return next(iter(rows[0].values())) if rows else None
