"""The DuckDB store: see `core` for connections, locking and migrations."""

from harness.store.core import DEFAULT_STORE, ENV_STORE, Store, default_store_path, insert

__all__ = ["DEFAULT_STORE", "ENV_STORE", "Store", "default_store_path", "insert"]
