"""The DuckDB store, the one place that reads and writes the database.

- `core`: connections, locking and numbered migrations (`migrations/*.sql`);
- `runs`: evaluation runs and their generations, scores and issues as they are written;
- `queries`: the read side the reports, the comparisons and the loop share (`Queries`),
  with `results` (the values it returns), `loops` (its questions about loops),
  `reader` (what every reader shares) and `sandbox` (read-only ad-hoc SQL);
- `browse`: the paged, filtered listings of the web viewer.
"""

from harness.store.core import DEFAULT_STORE, ENV_STORE, Store, default_store_path, insert

__all__ = ["DEFAULT_STORE", "ENV_STORE", "Store", "default_store_path", "insert"]
