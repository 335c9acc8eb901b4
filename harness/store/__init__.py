"""The DuckDB store: the only package that imports duckdb (an import-linter contract
checks it), and where the SQL of the stages is gathered.

- `core`: connections, locking and numbered migrations (`migrations/*.sql`);
- `runs`: evaluation runs and their samples, scores and issues as they are written, and
  the facts about a run that later stages read back;
- `generations`: the generation and log-likelihood cache, and linking it to runs;
- `training`: training runs, their outcomes and loss curves;
- `clusters`: a run's failures read back for clustering, and the clusterings stored;
- `datasets`: dataset manifests and their rows;
- `loops` (with the loop queries below): the loop's own bookkeeping, its loops and
  iterations, and the figures its decisions record;
- `queries`: the read side the reports, the comparisons and the loop share (`Queries`),
  with `results` (the values it returns), `scores` and `loops` (its questions about
  scores and about loops), `reader` (what every reader shares) and `sandbox`
  (read-only ad-hoc SQL);
- `browse`: the paged, filtered listings of the web viewer.

No module outside this package writes SQL or opens a connection (tests/test_architecture.py).
"""

from harness.store.core import DEFAULT_STORE, ENV_STORE, Store, default_store_path, insert

__all__ = ["DEFAULT_STORE", "ENV_STORE", "Store", "default_store_path", "insert"]
