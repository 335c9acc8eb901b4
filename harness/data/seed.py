"""Seed datasets: training rows a user already has, stored as a dataset the loop grows.

A seed file is JSONL (or .jsonl.gz) in the training-row format (`harness.TrainRowModel`:
`instruction` and/or `input`, `output`, optional `source`, `id`, `tags`, `metadata`).
It is curated like any new rows — empty rows, exact and near duplicates, and rows that
copy an item of any eval suite given (every split of the loop's suite and its guard)
are dropped, each counted by reason — and stored as a dataset whose selection is
`seed` and which has no parent. With `harness loop --seed-data FILE` every iteration
trains on the seed followed by the rows the loop added; `--selection none` (the "no
new data" control) trains on the seed alone, so a loop's gain can be told apart from
what retraining on the seed already gives.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from harness.data.curation import build_eval_index, curate
from harness.data.manifests import Manifest, canonical_example, dataset_hash, read_dataset_file
from harness.errors import HarnessError, NotFoundError
from harness.suite.load import Suite
from harness.types import TrainingExample

SEED_SOURCE = "seed"
"""The `source` of seed rows whose file names none."""


def file_hash(path: Path) -> str:
    """sha256 of the file's bytes: a loop's identity holds it, so an edited seed file
    starts a new loop rather than resuming one trained on other rows."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_seed_rows(path: Path) -> list[TrainingExample]:
    """The file's rows, validated (errors name the file and line); rows without a
    source get `seed`, and each row's provenance records its file and line."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"seed file {path} does not exist")
    rows = read_dataset_file(path)
    if not rows:
        raise HarnessError(f"seed file {path} holds no rows")
    return [
        canonical_example(
            replace(
                row,
                source=row.source or SEED_SOURCE,
                provenance={**row.provenance, "seed_file": path.name, "line": line},
            ),
            str(path),
        )
        for line, row in enumerate(rows, start=1)
    ]


def seed_manifest(
    path: Path, suites_against: Sequence[Suite], *, ngram: int = 13, near_duplicate_threshold: float = 0.8
) -> Manifest:
    """The seed file as a dataset, curated against `suites_against`; not yet stored
    (`harness.data.manifests.save_manifest` stores it), so a caller can check every
    input before it writes anything."""
    rows = read_seed_rows(path)
    index = build_eval_index(sorted(suites_against, key=lambda s: s.name), n=ngram)
    result = curate(rows, eval_index=index, near_duplicate_threshold=near_duplicate_threshold)
    kept = tuple(result.kept)
    if not kept:
        dropped = ", ".join(f"{n} {reason}" for reason, n in result.dropped.items())
        raise HarnessError(f"seed file {path}: curation dropped every row ({dropped}); nothing to train on")
    return Manifest(
        hash=dataset_hash(kept),
        rows=kept,
        n_added=len(kept),
        selection="seed",
        sources=dict(sorted(Counter(r.source for r in kept).items())),
        dropped=result.dropped,
        decontaminated_against=tuple({"name": s.name, "hash": s.hash} for s in index.suites),
    )
