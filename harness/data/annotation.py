"""Human annotation: people correct a cluster's failing samples, and the corrections
come back as training data (the `annotate` data source and `harness data export/import`).

Export writes the cluster's failures to a JSONL or CSV file with the columns
`sample_id, cluster, instruction, input, model_output, reference, issues,
corrected_output` (the last one empty); a person fills in `corrected_output` (and may
delete rows); import reads the file back as training rows, validated row by row:
missing or extra columns, an empty `corrected_output`, a repeated or unknown
`sample_id` are errors naming the file, line and column, and nothing is imported
unless every row is good.

A corrected failure is an eval item by construction, so its row names the item it
corrects (`provenance.eval_sample`): decontamination lets it match that one item and
checks it against every other, and the dataset manifest lists the items, because
scores on them no longer measure generalisation once they are trained on.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.cluster.clustering import Failure, load_clusters, load_failures
from harness.data.curation import build_eval_index, curate
from harness.data.datasets import cluster_counts, clustering_of, describe_counts, eval_suites, load_run_suite
from harness.data.manifests import Manifest, canonical_example, dataset_hash, load_manifest, save_manifest
from harness.errors import ConfigError, HarnessError, NotFoundError
from harness.store import Store
from harness.store.runs import newest_run_with_samples, run_sample_ids
from harness.suite.load import Suite
from harness.types import TrainingExample

COLUMNS: tuple[str, ...] = (
    "sample_id",
    "cluster",
    "instruction",
    "input",
    "model_output",
    "reference",
    "issues",
    "corrected_output",
)
Format = Literal["jsonl", "csv"]


def describe_issues(failure: Failure) -> str:
    """Why a sample failed, in one cell: its issues, then the metrics it failed (whichever their direction)."""
    parts = [f"{kind}: {issue.message}" for kind, issue in zip(failure.issue_types, failure.issues)]
    for reason in failure.reasons:
        if reason.startswith("metric:"):
            metric = reason.removeprefix("metric:")
            value = failure.scores.get(metric)
            parts.append(f"poor {metric}" + (f" ({value:.3g})" if value is not None else ""))
    return "; ".join(parts)


def annotation_rows(failures: Iterable[Failure], cluster: int) -> list[dict[str, Any]]:
    return [
        {
            "sample_id": f.sample.id,
            "cluster": cluster,
            "instruction": f.sample.instruction,
            "input": f.sample.input,
            "model_output": f.generation.text,
            "reference": f.sample.reference,
            "issues": describe_issues(f),
            "corrected_output": "",
        }
        for f in failures
    ]


def format_of(path: Path) -> Format:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    raise ConfigError(f"{path}: annotation files are .csv or .jsonl, not {path.suffix or 'without a suffix'}")


def write_annotations(rows: Sequence[dict[str, Any]], path: Path, format: Format) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if format == "csv":
        # utf-8-sig: spreadsheet programs then read non-ASCII text correctly.
        with path.open("w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, quoting=csv.QUOTE_MINIMAL)
            writer.writeheader()
            writer.writerows(rows)
    else:
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps({c: row[c] for c in COLUMNS}, ensure_ascii=False) + "\n")
    return path


@dataclass(frozen=True)
class Correction:
    """One good row of an annotation file."""

    line: int
    sample_id: str
    cluster: int | None
    instruction: str
    input: str
    corrected_output: str


class _Problems:
    """Collects every problem of a file so that one error lists them all."""

    def __init__(self, path: Path):
        self.path = path
        self.items: list[str] = []

    def add(self, line: int, message: str) -> None:
        self.items.append(f"{self.path}:{line}: {message}")

    def raise_if_any(self, what: str = "nothing was imported") -> None:
        if not self.items:
            return
        more = ""
        if len(self.items) > 1:
            listed = "; ".join(self.items[1:4]) + (" ..." if len(self.items) > 4 else "")
            more = f" (and {len(self.items) - 1} more problem(s): {listed})"
        raise ConfigError(f"{self.items[0]}{more}; {what}")


def _check_columns(columns: Sequence[str], line: int, problems: _Problems) -> bool:
    missing = [c for c in COLUMNS if c not in columns]
    extra = [c for c in columns if c not in COLUMNS]
    for column in missing:
        problems.add(line, f"column {column!r} is missing (expected columns: {', '.join(COLUMNS)})")
    for column in extra:
        problems.add(line, f"unknown column {column!r} (expected columns: {', '.join(COLUMNS)})")
    return not missing and not extra


def _raw_rows(path: Path, problems: _Problems) -> list[tuple[int, dict[str, Any]]]:
    """(line, row) pairs with exactly the expected columns; problems otherwise."""
    rows: list[tuple[int, dict[str, Any]]] = []
    if format_of(path) == "csv":
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                problems.add(1, "the file is empty; expected a header line: " + ",".join(COLUMNS))
                return rows
            header = [h.strip() for h in header]
            if not _check_columns(header, 1, problems):
                return rows
            end = reader.line_num
            for record in reader:
                line, end = end + 1, reader.line_num
                if not record or all(not cell.strip() for cell in record):
                    continue
                if len(record) != len(header):
                    problems.add(
                        line,
                        f"has {len(record)} fields, the header has {len(header)} (is a comma or quote missing?)",
                    )
                    continue
                rows.append((line, dict(zip(header, record))))
        return rows
    with path.open(encoding="utf-8") as handle:
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.add(line, f"not valid JSON: {exc.msg}")
                continue
            if not isinstance(value, dict):
                problems.add(line, "each line must be a JSON object with the columns " + ", ".join(COLUMNS))
                continue
            if _check_columns(list(value), line, problems):
                rows.append((line, value))
    return rows


def read_corrections(path: Path, known_ids: Iterable[str], known_where: str) -> list[Correction]:
    """The corrected rows of an annotation file; any bad row is an error (naming file,
    line and column) and then nothing is returned."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"annotation file {path} does not exist")
    known = set(known_ids)
    problems = _Problems(path)
    corrections: list[Correction] = []
    seen: dict[str, int] = {}
    for line, row in _raw_rows(path, problems):
        values = {c: "" if row[c] is None else row[c] for c in COLUMNS}
        sample_id = str(values["sample_id"]).strip()
        corrected = values["corrected_output"]
        ok = True
        if not sample_id:
            problems.add(line, "column 'sample_id' is empty")
            ok = False
        elif sample_id not in known:
            problems.add(
                line, f"column 'sample_id': unknown sample {sample_id!r} ({known_where} has no such sample)"
            )
            ok = False
        elif sample_id in seen:
            problems.add(
                line, f"column 'sample_id': sample {sample_id!r} is already on line {seen[sample_id]}"
            )
            ok = False
        if not isinstance(corrected, str) or not corrected.strip():
            problems.add(
                line, "column 'corrected_output' is empty: write the corrected answer, or delete the row"
            )
            ok = False
        cluster: int | None = None
        raw_cluster = str(values["cluster"]).strip()
        if raw_cluster:
            try:
                cluster = int(raw_cluster)
            except ValueError:
                problems.add(line, f"column 'cluster': {raw_cluster!r} is not a whole number")
                ok = False
        instruction, input = str(values["instruction"]), str(values["input"])
        if not instruction.strip() and not input.strip():
            problems.add(line, "columns 'instruction' and 'input' are both empty")
            ok = False
        if ok:
            seen[sample_id] = line
            corrections.append(
                Correction(line, sample_id, cluster, instruction, input, str(corrected).strip())
            )
    problems.raise_if_any()
    if not corrections:
        raise ConfigError(
            f"{path}: no rows to import (every correction needs a sample_id and a corrected_output)"
        )
    return corrections


def corrections_to_examples(
    corrections: Iterable[Correction], path: Path, suite: str, run_id: int | None
) -> list[TrainingExample]:
    return [
        TrainingExample(
            instruction=c.instruction,
            input=c.input,
            output=c.corrected_output,
            source="annotate",
            cluster=c.cluster,
            provenance={
                "file": Path(path).name,
                "line": c.line,
                "sample_id": c.sample_id,
                **({"run": run_id} if run_id is not None else {}),
                "eval_sample": {"suite": suite, "id": c.sample_id},
            },
        )
        for c in corrections
    ]



# ---------------------------------------------------------------------------
# Human annotation
# ---------------------------------------------------------------------------


def export_annotations(
    store: Store,
    run_id: int,
    cluster_id: int,
    *,
    clustering_id: int | None = None,
    format: str = "csv",
    output: Path | None = None,
) -> tuple[Path, int]:
    """Write a cluster's failing samples for people to correct; (path, rows)."""
    if format not in ("csv", "jsonl"):
        raise ConfigError(f"--format must be csv or jsonl, got {format!r}")
    clustering_id = clustering_of(store, run_id, clustering_id)
    clusters = {c.id: c for c in load_clusters(store, clustering_id)}
    if cluster_id not in clusters:
        raise NotFoundError(
            f"clustering {clustering_id} of run {run_id} has no cluster {cluster_id}; "
            f"its clusters: {', '.join(str(c) for c in sorted(clusters))}"
        )
    by_id = {f.sample.id: f for f in load_failures(store, run_id)}
    members = [by_id[m] for m in clusters[cluster_id].members if m in by_id]
    path = Path(output) if output else Path(f"run{run_id}-cluster{cluster_id}.{format}")
    if output and format_of(path) != format:
        raise ConfigError(f"--output {path} does not end in .{format}")
    write_annotations(annotation_rows(members, cluster_id), path, format)  # type: ignore[arg-type]
    return path, len(members)


def _run_for_annotations(store: Store, path: Path) -> int | None:
    """The newest run that holds every sample id the file names (None when none does)."""
    ids = sorted(
        {str(row.get("sample_id", "")).strip() for _, row in _raw_rows(path, _Problems(path))} - {""}
    )
    if not ids:
        return None
    return newest_run_with_samples(store, ids)


def import_annotations(
    store: Store,
    path: Path,
    *,
    run_id: int | None = None,
    parent: str | None = None,
    suites_against: Sequence[str | Path | Suite] | None = None,
    output: Path | None = None,
    ngram: int = 13,
    near_duplicate_threshold: float = 0.8,
) -> Manifest:
    """Import a corrected annotation file as a new dataset (parent rows + corrections).
    `run_id` None: the newest run that holds every sample the file names. Every row is
    validated first; one bad row and nothing is imported."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"annotation file {path} does not exist")
    if run_id is None:
        run_id = _run_for_annotations(store, path)
    if run_id is None:
        # No run holds these samples: validation then reports each unknown id.
        read_corrections(path, (), f"no run in store {store.path} (pass --run)")
        raise NotFoundError(f"no run in store {store.path} holds the samples of {path}; pass --run")
    known = run_sample_ids(store, run_id)
    if not known:
        raise NotFoundError(f"no run {run_id} in {store.path}; `harness runs` lists them")
    corrections = read_corrections(path, known, f"run {run_id}")
    suite, run_suites = load_run_suite(store, run_id)
    examples = [
        canonical_example(e, str(path)) for e in corrections_to_examples(corrections, path, suite.name, run_id)
    ]
    parent_manifest = load_manifest(store, parent) if parent else None
    existing = list(parent_manifest.rows) if parent_manifest else []
    index = build_eval_index(eval_suites(run_suites, suites_against), n=ngram)
    result = curate(
        examples,
        existing=existing,
        eval_index=index,
        near_duplicate_threshold=near_duplicate_threshold,
        allow_own_eval_item=True,
    )
    added = result.kept
    if not added:
        raise HarnessError(
            f"{path}: every correction was dropped by curation ({describe_counts(result.dropped)}); "
            "nothing was imported"
        )
    rows = tuple(existing) + tuple(added)
    manifest = Manifest(
        hash=dataset_hash(rows),
        rows=rows,
        n_added=len(added),
        selection="import",
        parent=parent_manifest.hash if parent_manifest else None,
        run_id=run_id,
        clustering_id=None,
        sources={"annotate": len(added)},
        cluster_counts=cluster_counts(added),
        dropped=result.dropped,
        decontaminated_against=tuple({"name": s.name, "hash": s.hash} for s in index.suites),
    )
    return save_manifest(store, manifest, output)
