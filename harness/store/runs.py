"""Evaluation runs in the store: writing their header, samples, results, errors and
status, and the few facts about a stored run that the later stages read back (its
suite, its main metric, its samples)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from harness.store.core import Store, insert, utcnow
from harness.types import ComponentError, Sample, ScoringResult

RESUMABLE = ("running", "failed")


def find_resumable(store: Store, fingerprint: str) -> int | None:
    """The newest unfinished run with this fingerprint. The caller holds the writer lock,
    so a run still marked 'running' was interrupted."""
    return store.scalar(
        "SELECT run_id FROM runs WHERE fingerprint = ? AND status IN ('running', 'failed') "
        "ORDER BY run_id DESC LIMIT 1",
        [fingerprint],
    )


def create_run(
    store: Store, header: Mapping[str, Any], samples: Sequence[Sample], prompts: Mapping[str, str]
) -> int:
    """Insert the run header and its samples in one transaction; returns the run id."""
    with store.transaction() as con:
        columns = {k: _jsonable(v) for k, v in header.items()}
        names = ", ".join(columns)
        marks = ", ".join("?" for _ in columns)
        row = con.execute(
            f"INSERT INTO runs ({names}) VALUES ({marks}) RETURNING run_id", list(columns.values())
        ).fetchone()
        assert row is not None  # RETURNING gives the inserted row
        run_id = row[0]
        insert(
            con,
            "samples",
            {
                "run_id": [run_id] * len(samples),
                "sample_id": [s.id for s in samples],
                "position": list(range(len(samples))),
                "instruction": [s.instruction for s in samples],
                "input": [s.input for s in samples],
                "refs": [list(s.references) for s in samples],
                "tags": [list(s.tags) for s in samples],
                "group_id": [s.group for s in samples],
                "metadata": [json.dumps(dict(s.metadata)) for s in samples],
                "prompt": [prompts[s.id] for s in samples],
            },
        )
    return int(run_id)


def mark_running(store: Store, run_id: int) -> None:
    with store.transaction() as con:
        con.execute("UPDATE runs SET status = 'running', error = NULL WHERE run_id = ?", [run_id])


def save_results(store: Store, run_id: int, result: ScoringResult) -> None:
    """Replace the run's scores, issues, failures and component errors in one transaction."""
    with store.transaction() as con:
        for table in ("sample_scores", "corpus_scores", "issues", "failures", "run_errors"):
            con.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])
        for m in result.metrics:
            insert(
                con,
                "sample_scores",
                {
                    "run_id": [run_id] * len(m.sample_ids),
                    "sample_id": m.sample_ids,
                    "metric": [m.name] * len(m.sample_ids),
                    "value": [_finite_or_none(v) for v in m.values],
                    "stats": [list(map(float, row)) for row in m.stats],
                },
            )
        insert(
            con,
            "corpus_scores",
            {
                "run_id": [run_id] * len(result.metrics),
                "metric": [m.name for m in result.metrics],
                "value": [_finite_or_none(m.corpus) for m in result.metrics],
                "ci_low": [_finite_or_none(m.ci_low) for m in result.metrics],
                "ci_high": [_finite_or_none(m.ci_high) for m in result.metrics],
                "confidence": [m.confidence for m in result.metrics],
                "higher_is_better": [m.higher_is_better for m in result.metrics],
                "target": [m.target for m in result.metrics],
                "passed": [m.passed for m in result.metrics],
                "sample_threshold": [m.sample_threshold for m in result.metrics],
                "n": [len(m.sample_ids) for m in result.metrics],
            },
        )
        issues = result.issues
        insert(
            con,
            "issues",
            {
                "run_id": [run_id] * len(issues),
                "sample_id": [i.sample_id for i in issues],
                "detector": [i.detector for i in issues],
                "kind": [i.kind for i in issues],
                "severity": [i.severity for i in issues],
                "message": [i.message for i in issues],
                "span_start": [i.start for i in issues],
                "span_end": [i.end for i in issues],
                "data": [json.dumps(dict(i.data), default=str) for i in issues],
            },
        )
        failures = sorted(result.failures.items())
        insert(
            con,
            "failures",
            {
                "run_id": [run_id] * len(failures),
                "sample_id": [sid for sid, _ in failures],
                "reasons": [reasons for _, reasons in failures],
            },
        )
        _insert_errors(con, run_id, result.errors)


def record_errors(store: Store, run_id: int, errors: Sequence[ComponentError]) -> None:
    if errors:
        with store.transaction() as con:
            _insert_errors(con, run_id, errors)


def _insert_errors(con: Any, run_id: int, errors: Sequence[ComponentError]) -> None:
    now = utcnow()
    insert(
        con,
        "run_errors",
        {
            "run_id": [run_id] * len(errors),
            "sample_id": [e.sample_id for e in errors],
            "plugin": [e.plugin for e in errors],
            "hook": [e.hook for e in errors],
            "component": [e.component for e in errors],
            "message": [e.message for e in errors],
            "traceback": [e.traceback for e in errors],
            "created_at": [now] * len(errors),
        },
    )


def finish_run(
    store: Store,
    run_id: int,
    status: str,
    *,
    error: str | None = None,
    generation_s: float | None = None,
    scoring_s: float | None = None,
) -> None:
    with store.transaction() as con:
        con.execute(
            "UPDATE runs SET status = ?, error = ?, finished_at = ?, "
            "generation_s = coalesce(?, generation_s), scoring_s = coalesce(?, scoring_s) "
            "WHERE run_id = ?",
            [status, error, utcnow(), generation_s, scoring_s, run_id],
        )


# -- what the later stages read back ---------------------------------------------------


def run_exists(store: Store, run_id: int) -> bool:
    return bool(store.scalar("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]))


def run_main_metric(store: Store, run_id: int) -> str | None:
    """The name of the run's main metric; None when there is no such run."""
    return store.scalar("SELECT main_metric FROM runs WHERE run_id = ?", [run_id])


def run_suite_name(store: Store, run_id: int) -> str | None:
    """The name of the suite the run evaluated; None when there is no such run."""
    return store.scalar("SELECT suite_name FROM runs WHERE run_id = ?", [run_id])


def run_suite_source(store: Store, run_id: int) -> dict[str, Any] | None:
    """Where the run's suite came from: its suite_name, suite_path, suite_hash and split;
    None when there is no such run."""
    rows = store.query("SELECT suite_name, suite_path, suite_hash, split FROM runs WHERE run_id = ?", [run_id])
    return rows[0] if rows else None


def run_sample_rows(store: Store, run_id: int) -> list[dict[str, Any]]:
    """The sample_id, instruction, input and refs of every sample the run stored, in suite order."""
    return store.query(
        "SELECT sample_id, instruction, input, refs FROM samples WHERE run_id = ? ORDER BY position",
        [run_id],
    )


def run_sample_ids(store: Store, run_id: int) -> list[str]:
    """The ids of the run's samples, in suite order (empty when there is no such run)."""
    return [
        r["sample_id"]
        for r in store.query("SELECT sample_id FROM samples WHERE run_id = ? ORDER BY position", [run_id])
    ]


def sample_outputs(store: Store, run_id: int, sample_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The sample_id, input, refs and first output (`text`) of the given samples of a run."""
    return store.query(
        "SELECT s.sample_id, s.input, s.refs, g.text FROM samples s "
        "JOIN run_generations rg USING (run_id, sample_id) JOIN generations g USING (cache_key) "
        "WHERE s.run_id = ? AND rg.draw = 0 AND list_contains(?, s.sample_id)",
        [run_id, list(sample_ids)],
    )


def newest_run_with_samples(store: Store, sample_ids: Sequence[str]) -> int | None:
    """The newest run that holds every one of `sample_ids`; None when none does."""
    found = store.scalar(
        "SELECT run_id FROM samples WHERE list_contains(?, sample_id) GROUP BY run_id "
        "HAVING count(DISTINCT sample_id) = ? ORDER BY run_id DESC LIMIT 1",
        [list(sample_ids), len(sample_ids)],
    )
    return int(found) if found is not None else None


def _jsonable(value: Any) -> Any:
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return value


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if value == value and value not in (float("inf"), float("-inf")) else None
