"""Versioned training datasets: their rows, their manifests, storing and loading them.

A dataset is the full list of training rows at one point of the loop: its parent's rows
followed by the rows added for this iteration. It is content-addressed: its hash is the
sha256 of its JSONL file, one canonical JSON object per row (sorted keys, no extra
spaces, UTF-8, each line ending in a newline), so `sha256sum <hash>.jsonl` prints the
hash back. Each line is a valid training row (`harness.TrainRowModel`: instruction,
input, output, source, and `metadata` holding the row's cluster and provenance), so a
dataset file can serve as a pool or as augmentation seeds.

The manifest (the `datasets` table) records the parent, the run and clustering it was
built for, the selection (targeted, random, random_on_task, import or seed), the rows added per source and per
cluster, what curation dropped and why, and the eval suites (names and hashes) it was
decontaminated against. `harness.data.datasets` builds new ones.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.data.curation import content_hash
from harness.errors import ConfigError, HarnessError, NotFoundError
from harness.store import Store
from harness.store.core import utcnow
from harness.store.datasets import (
    dataset_exists,
    dataset_listing,
    dataset_record,
    dataset_row_records,
    datasets_with_prefix,
    latest_dataset,
    save_dataset,
)
from harness.types import TrainingExample

if TYPE_CHECKING:
    pass


BUILT_SELECTIONS = ("targeted", "random", "random_on_task")
"""How `build_dataset` may choose rows: aimed at the clusters, or one of the equal-budget
controls (a uniform draw from the whole pool, or from the rows of the suite's own task)."""
SELECTIONS = (*BUILT_SELECTIONS, "import", "seed")
"""Every selection a stored dataset may have: built, imported annotations, a seed file
(`harness.data.seed`)."""


@dataclass(frozen=True)
class Manifest:
    """A stored dataset: its rows and how they came to be."""

    hash: str
    rows: tuple[TrainingExample, ...]
    n_added: int
    selection: str
    parent: str | None = None
    run_id: int | None = None
    clustering_id: int | None = None
    sources: Mapping[str, int] = field(default_factory=dict)
    """Source -> rows added."""
    cluster_counts: Mapping[str, int] = field(default_factory=dict)
    """Cluster id (as text; '-1' is the unclustered group) -> rows added."""
    dropped: Mapping[str, int] = field(default_factory=dict)
    """Reason -> candidates dropped (by curation, or by the source itself)."""
    decontaminated_against: tuple[Mapping[str, str], ...] = ()
    """The eval suites the new rows were checked against: {name, hash} each."""
    path: str | None = None
    created_at: datetime | None = None

    @property
    def manifest_hash(self) -> str:
        """The same as `hash` (the name of its column in the store)."""
        return self.hash

    @property
    def n_rows(self) -> int:
        return len(self.rows)

    @property
    def added(self) -> tuple[TrainingExample, ...]:
        return self.rows[len(self.rows) - self.n_added :]

    @property
    def budget_notes(self) -> dict[str, str]:
        """Cluster id (as text) -> why its share of the budget was not its share by size
        (see `cluster_weights`), from the provenance of the rows added."""
        notes: dict[str, str] = {}
        for row in self.added:
            reason = row.provenance.get("budget_reason")
            if reason and row.cluster is not None:
                notes.setdefault(str(row.cluster), str(reason))
        return dict(sorted(notes.items()))

    @property
    def eval_items(self) -> list[str]:
        """'suite:sample_id' of rows that are corrections of eval items (annotation imports)."""
        found = []
        for row in self.rows:
            own = row.provenance.get("eval_sample")
            if isinstance(own, Mapping):
                found.append(f"{own.get('suite')}:{own.get('id')}")
        return sorted(set(found))


# ---------------------------------------------------------------------------
# Rows as canonical JSON
# ---------------------------------------------------------------------------


def row_record(example: TrainingExample) -> dict[str, Any]:
    """A row as written to the dataset file (a valid TrainRowModel)."""
    return {
        "instruction": example.instruction,
        "input": example.input,
        "output": example.output,
        "source": example.source,
        "metadata": {"cluster": example.cluster, "provenance": dict(example.provenance)},
    }


def canonical_line(example: TrainingExample) -> str:
    return json.dumps(row_record(example), sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"


def dataset_hash(rows: Sequence[TrainingExample]) -> str:
    """sha256 of the dataset file the rows make."""
    digest = hashlib.sha256()
    for row in rows:
        digest.update(canonical_line(row).encode("utf-8"))
    return digest.hexdigest()


def example_from_record(record: Mapping[str, Any]) -> TrainingExample:
    metadata = record.get("metadata") or {}
    return TrainingExample(
        instruction=record.get("instruction", ""),
        input=record.get("input", ""),
        output=record["output"],
        source=record.get("source", ""),
        cluster=metadata.get("cluster"),
        provenance=metadata.get("provenance") or {},
    )


def canonical_example(example: TrainingExample, where: str) -> TrainingExample:
    """The row as it will read back from JSON (tuples become lists, keys text), or an
    error when its provenance cannot be written as JSON."""
    try:
        provenance = json.loads(json.dumps(dict(example.provenance), sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise HarnessError(f"{where}: a row's provenance cannot be written as JSON: {exc}") from None
    return replace(example, provenance=provenance)


def read_dataset_file(path: Path) -> list[TrainingExample]:
    """The rows of a dataset file (as written by `save_manifest`); errors give file and line."""
    from harness.suite.config import TrainRowModel
    from harness.suite.files import read_jsonl

    rows = []
    for _, row in read_jsonl(Path(path), TrainRowModel):
        rows.append(example_from_record(row.model_dump()))
    return rows


# ---------------------------------------------------------------------------
# Storing and loading manifests
# ---------------------------------------------------------------------------


def default_dataset_path(store: Store, digest: str) -> Path:
    """`datasets/<hash>.jsonl` beside the store file (.harness/datasets/ by default)."""
    return store.path.parent / "datasets" / f"{digest}.jsonl"


def save_manifest(store: Store, manifest: Manifest, output: Path | None = None) -> Manifest:
    """Write the dataset file and store the manifest and its rows in one transaction.
    A dataset already stored (same hash) is returned as stored; its file is rewritten
    if it went missing, and copied to `output` when that names another file."""
    path = Path(output) if output else default_dataset_path(store, manifest.hash)
    if dataset_exists(store, manifest.hash):
        stored = load_manifest(store, manifest.hash)
        if stored.path and not Path(stored.path).is_file():
            _write_file(Path(stored.path), stored.rows)
        if output and (not stored.path or Path(output).resolve() != Path(stored.path)):
            _write_file(Path(output), stored.rows)  # a copy where this caller asked for it
        return stored
    _write_file(path, manifest.rows)
    created = utcnow()
    rows = manifest.rows
    save_dataset(
        store,
        {
            "manifest_hash": [manifest.hash],
            "parent_hash": [manifest.parent],
            "run_id": [manifest.run_id],
            "clustering_id": [manifest.clustering_id],
            "selection": [manifest.selection],
            "sources": [json.dumps(dict(sorted(manifest.sources.items())))],
            "cluster_counts": [json.dumps(dict(manifest.cluster_counts))],
            "dropped": [json.dumps(dict(sorted(manifest.dropped.items())))],
            "decontaminated_against": [json.dumps([dict(s) for s in manifest.decontaminated_against])],
            "n_rows": [manifest.n_rows],
            "n_added": [manifest.n_added],
            "path": [str(path.resolve())],
            "created_at": [created],
        },
        {
            "manifest_hash": [manifest.hash] * len(rows),
            "position": list(range(len(rows))),
            "row_hash": [content_hash(r) for r in rows],
            "instruction": [r.instruction for r in rows],
            "input": [r.input for r in rows],
            "output": [r.output for r in rows],
            "source": [r.source for r in rows],
            "cluster": [r.cluster for r in rows],
            "provenance": [json.dumps(dict(r.provenance), sort_keys=True) for r in rows],
        },
    )
    return replace(manifest, path=str(path.resolve()), created_at=created)


def _write_file(path: Path, rows: Sequence[TrainingExample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(canonical_line(row))
    os.replace(partial, path)


def resolve_manifest(store: Store, ref: str) -> str:
    """A full manifest hash from a hash, a unique prefix of one (4+ characters) or 'latest'."""
    text = ref.strip().lower()
    if text == "latest":
        found = latest_dataset(store)
        if found is None:
            raise NotFoundError(f"store {store.path} has no datasets yet: `harness data add RUN` builds one")
        return found
    if len(text) < 4 or any(c not in "0123456789abcdef" for c in text):
        raise ConfigError(
            f"{ref!r} is not a dataset hash: give 4 or more hex digits, or 'latest' (`harness data list`)"
        )
    matches = datasets_with_prefix(store, text)
    if not matches:
        raise NotFoundError(f"no dataset {ref!r} in store {store.path}; `harness data list` lists them")
    if len(matches) > 1:
        raise ConfigError(
            f"{ref!r} matches {len(matches)} datasets "
            f"({', '.join(m[:12] for m in matches[:4])}); give more digits"
        )
    return str(matches[0])


def load_manifest(store: Store, ref: str) -> Manifest:
    """A stored manifest with its rows, by hash, unique prefix or 'latest'."""
    digest = resolve_manifest(store, ref)
    row = dataset_record(store, digest)
    examples = tuple(
        TrainingExample(
            instruction=r["instruction"],
            input=r["input"],
            output=r["output"],
            source=r["source"],
            cluster=r["cluster"],
            provenance=json.loads(r["provenance"]) if r["provenance"] else {},
        )
        for r in dataset_row_records(store, digest)
    )
    return Manifest(
        hash=digest,
        rows=examples,
        n_added=row["n_added"],
        selection=row["selection"],
        parent=row["parent_hash"],
        run_id=row["run_id"],
        clustering_id=row["clustering_id"],
        sources=json.loads(row["sources"]),
        cluster_counts=json.loads(row["cluster_counts"]),
        dropped=json.loads(row["dropped"]),
        decontaminated_against=tuple(json.loads(row["decontaminated_against"])),
        path=row["path"],
        created_at=row["created_at"],
    )


def load_manifest_rows(store: Store, ref: str) -> list[TrainingExample]:
    """The training rows of a stored dataset, in order (what a trainer trains on)."""
    return list(load_manifest(store, ref).rows)


def list_manifests(store: Store) -> list[dict[str, Any]]:
    """Every stored manifest (without rows), newest first."""
    rows = dataset_listing(store)
    for row in rows:
        row["sources"] = json.loads(row["sources"])
        row["dropped"] = json.loads(row["dropped"])
    return rows
