"""Ad-hoc SQL on the store (`harness sql`, `Queries.sql`), read-only and sandboxed.

The query runs in `Store.sandbox()`: DuckDB opens the file read-only with file system
access and configuration changes disabled, so neither `COPY ... TO`, `ATTACH`,
`EXPORT`, `INSTALL`/`LOAD` nor `SET` can reach beyond the query; statements other than
reads are refused before they run.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from harness.errors import ConfigError, HarnessError
from harness.store.core import Store, fetch_arrow

_READ_STATEMENTS = frozenset(
    {
        duckdb.StatementType.SELECT,
        duckdb.StatementType.EXPLAIN,
        duckdb.StatementType.PRAGMA,
        duckdb.StatementType.CALL,
    }
)
"""Statement kinds `Queries.sql` runs; the sandbox would refuse most others anyway."""


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def read_only_sql(store: Store, query: str) -> pa.Table:
    """The result of read-only SQL on a store opened read-only (`Queries.sql`)."""
    if not store.read_only:
        raise HarnessError("ad-hoc SQL runs only on a store opened read-only (Store.reader)")
    try:
        statements = duckdb.extract_statements(query)
    except duckdb.Error as exc:
        raise ConfigError(f"SQL error: {_first_line(exc)}") from None
    if not statements:
        raise ConfigError("SQL error: the query is empty")
    for statement in statements:
        if statement.type not in _READ_STATEMENTS:
            kind = statement.type.name
            raise ConfigError(
                f"SQL error: {kind} statements are refused; `harness sql` is read-only "
                "(SELECT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN, PRAGMA, CALL)"
            )
    try:
        with store.sandbox() as con:
            return fetch_arrow(con.sql(query))
    except duckdb.Error as exc:
        raise ConfigError(f"SQL error: {_first_line(exc)}") from None
