"""Datasets in the store: the `datasets` table (one manifest per dataset) and its rows
(`dataset_rows`). `harness.data.manifests` builds the records and reads them back as
manifests; the SQL is here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from harness.store.core import Store, insert

_LISTED = (
    "manifest_hash, parent_hash, run_id, clustering_id, selection, sources, n_rows, n_added, "
    "dropped, path, created_at"
)


def dataset_exists(store: Store, digest: str) -> bool:
    return bool(store.query("SELECT manifest_hash FROM datasets WHERE manifest_hash = ?", [digest]))


def save_dataset(store: Store, manifest: Mapping[str, Sequence[Any]], rows: Mapping[str, Sequence[Any]]) -> None:
    """A manifest and its rows, as columns of `datasets` and `dataset_rows`, in one
    transaction."""
    with store.transaction() as con:
        insert(con, "datasets", dict(manifest))
        insert(con, "dataset_rows", dict(rows))


def latest_dataset(store: Store) -> str | None:
    """The hash of the newest dataset; None when there is none."""
    found = store.scalar("SELECT manifest_hash FROM datasets ORDER BY created_at DESC, manifest_hash LIMIT 1")
    return None if found is None else str(found)


def datasets_with_prefix(store: Store, prefix: str) -> list[str]:
    """The hashes that start with `prefix`, in order."""
    return [
        r["manifest_hash"]
        for r in store.query(
            "SELECT manifest_hash FROM datasets WHERE manifest_hash LIKE ? ORDER BY manifest_hash",
            [prefix + "%"],
        )
    ]


def dataset_record(store: Store, digest: str) -> dict[str, Any]:
    """The dataset's `datasets` row (JSON columns as stored)."""
    return store.query("SELECT * FROM datasets WHERE manifest_hash = ?", [digest])[0]


def dataset_row_records(store: Store, digest: str) -> list[dict[str, Any]]:
    """The dataset's rows, in order."""
    return store.query("SELECT * FROM dataset_rows WHERE manifest_hash = ? ORDER BY position", [digest])


def dataset_listing(store: Store) -> list[dict[str, Any]]:
    """Every dataset's manifest columns (without rows), newest first."""
    return store.query(f"SELECT {_LISTED} FROM datasets ORDER BY created_at DESC, manifest_hash")
