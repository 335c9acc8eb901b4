"""The web viewer's questions about the store: filtered, paged lists and the links
between runs, samples, clusters, datasets and loops.

Each method is one or two SQL queries that return only the rows of the page asked for
(LIMIT/OFFSET over a filtered id list, then the details of those ids), so that a page of
a run of 100,000 samples costs the same as a page of a run of 100. `bench/view.py`
measures it. Everything here reads; nothing writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from harness.store.clusters import latest_clustering
from harness.store.core import Store

PAGE_SIZE = 50


@dataclass(frozen=True)
class RunFilter:
    """What the runs page narrows to; None means any."""

    suite: str | None = None
    model: str | None = None
    label: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class SampleFilter:
    """What the sample browser narrows to; None (or "") means any."""

    tag: str | None = None
    cluster: int | None = None
    """A cluster id of the run's latest clustering."""
    detector: str | None = None
    """Samples with at least one issue from this detector."""
    failing: bool | None = None
    metric: str | None = None
    """The metric `low`/`high` bound (inclusive); both None: no bound."""
    low: float | None = None
    high: float | None = None
    text: str | None = None
    """Case-insensitive substring of the instruction, input, output or a reference."""

    def as_params(self) -> dict[str, str]:
        """The filter as query-string parameters (for links to other pages)."""
        out: dict[str, str] = {}
        for name in ("tag", "cluster", "detector", "metric", "low", "high", "text"):
            value = getattr(self, name)
            if value is not None and value != "":
                out[name] = f"{value:g}" if isinstance(value, float) else str(value)
        if self.failing is not None:
            out["status"] = "fail" if self.failing else "pass"
        return out


@dataclass(frozen=True)
class Page:
    """One page of a longer list."""

    rows: list[dict[str, Any]]
    total: int
    offset: int
    limit: int

    @property
    def next_offset(self) -> int | None:
        return self.offset + self.limit if self.offset + self.limit < self.total else None

    @property
    def previous_offset(self) -> int | None:
        return max(self.offset - self.limit, 0) if self.offset > 0 else None


@dataclass(frozen=True)
class RunFacets:
    """The values the runs page offers to filter by."""

    suites: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)


class Browse:
    """Read-only, paged queries for the viewer. Open the store with `Store.reader`."""

    def __init__(self, store: Store):
        self.store = store

    # -- runs -----------------------------------------------------------------

    def runs(self, where: RunFilter, *, offset: int = 0, limit: int = PAGE_SIZE) -> Page:
        """Runs, newest first, with their main metric and failure count."""
        rows = self.store.query(
            """
            SELECT r.run_id, r.suite_name, r.suite_version, r.model_path, r.adapter_path, r.backend,
                   r.label, r.status, r.n_samples, r.main_metric, r.started_at,
                   c.value AS main_value, c.ci_low AS main_low, c.ci_high AS main_high,
                   (SELECT count(*) FROM failures f WHERE f.run_id = r.run_id) AS failures,
                   count(*) OVER () AS total
            FROM runs r
            LEFT JOIN corpus_scores c ON c.run_id = r.run_id AND c.metric = r.main_metric
            WHERE ($suite IS NULL OR r.suite_name = $suite)
              AND ($model IS NULL OR r.model_path = $model)
              AND ($label IS NULL OR r.label = $label)
              AND ($status IS NULL OR r.status = $status)
            ORDER BY r.run_id DESC
            LIMIT $limit OFFSET $offset
            """,
            {**where.__dict__, "limit": limit, "offset": offset},
        )
        total = rows[0]["total"] if rows else self._count_runs(where) if offset else 0
        return Page(rows, int(total), offset, limit)

    def run_facets(self) -> RunFacets:
        def distinct(column: str) -> list[str]:
            return [
                r["v"]
                for r in self.store.query(
                    f"SELECT DISTINCT {column} AS v FROM runs WHERE {column} IS NOT NULL ORDER BY 1"
                )
            ]

        return RunFacets(
            distinct("suite_name"), distinct("model_path"), distinct("label"), distinct("status")
        )

    def _count_runs(self, where: RunFilter) -> int:
        return int(
            self.store.scalar(
                "SELECT count(*) FROM runs WHERE ($suite IS NULL OR suite_name = $suite) "
                "AND ($model IS NULL OR model_path = $model) AND ($label IS NULL OR label = $label) "
                "AND ($status IS NULL OR status = $status)",
                where.__dict__,
            )
            or 0
        )

    def previous_run(self, run_id: int, suite_name: str) -> int | None:
        """The run of the same suite just before `run_id`; None when it is the first."""
        return self.store.scalar(
            "SELECT max(run_id) FROM runs WHERE suite_name = ? AND run_id < ?", [suite_name, run_id]
        )

    def other_runs(self, run_id: int, sample_id: str) -> list[dict[str, Any]]:
        """Every other run that has this sample, with its main-metric value there."""
        return self.store.query(
            """
            SELECT r.run_id, r.model_path, r.adapter_path, r.label, r.main_metric, sc.value,
                   f.sample_id IS NOT NULL AS failing
            FROM samples s
            JOIN runs r ON r.run_id = s.run_id
            JOIN runs this ON this.run_id = $run AND this.suite_name = r.suite_name
            LEFT JOIN sample_scores sc ON sc.run_id = s.run_id AND sc.sample_id = s.sample_id
                                      AND sc.metric = r.main_metric
            LEFT JOIN failures f ON f.run_id = s.run_id AND f.sample_id = s.sample_id
            WHERE s.sample_id = $sample AND s.run_id <> $run
            ORDER BY r.run_id DESC
            """,
            {"run": run_id, "sample": sample_id},
        )

    # -- samples --------------------------------------------------------------

    def latest_clustering(self, run_id: int) -> int | None:
        return latest_clustering(self.store, run_id)

    def sample_facets(self, run_id: int) -> dict[str, list[Any]]:
        """Tags, detectors, metrics and clusters of a run (for the filter form)."""
        clustering = self.latest_clustering(run_id)
        return {
            "tags": [
                r["tag"]
                for r in self.store.query(
                    "SELECT DISTINCT unnest(tags) AS tag FROM samples WHERE run_id = ? ORDER BY 1",
                    [run_id],
                )
            ],
            "detectors": [
                r["detector"]
                for r in self.store.query(
                    "SELECT DISTINCT detector FROM issues WHERE run_id = ? ORDER BY 1", [run_id]
                )
            ],
            "metrics": [
                r["metric"]
                for r in self.store.query(
                    "SELECT metric FROM corpus_scores WHERE run_id = ? ORDER BY metric", [run_id]
                )
            ],
            "clusters": self.store.query(
                "SELECT cluster_id, label, size FROM clusters WHERE clustering_id = ? "
                "ORDER BY cluster_id = -1, size DESC, cluster_id",
                [clustering],
            )
            if clustering is not None
            else [],
        }

    def samples(
        self, run_id: int, where: SampleFilter, *, offset: int = 0, limit: int = PAGE_SIZE
    ) -> Page:
        """A page of a run's samples (in suite order) that match `where`."""
        conditions, params = self._sample_conditions(run_id, where)
        ids = self.store.query(
            f"""
            SELECT s.sample_id, count(*) OVER () AS total
            FROM samples s
            WHERE s.run_id = $run {''.join(' AND ' + c for c in conditions)}
            ORDER BY s.position
            LIMIT $limit OFFSET $offset
            """,
            {**params, "limit": limit, "offset": offset},
        )
        if not ids:
            total = self._count_samples(run_id, conditions, params) if offset else 0
            return Page([], total, offset, limit)
        rows = self.sample_rows(run_id, [r["sample_id"] for r in ids])
        return Page(rows, int(ids[0]["total"]), offset, limit)

    def _count_samples(self, run_id: int, conditions: list[str], params: dict[str, Any]) -> int:
        return int(
            self.store.scalar(
                f"SELECT count(*) FROM samples s WHERE s.run_id = $run "
                f"{''.join(' AND ' + c for c in conditions)}",
                params,
            )
            or 0
        )

    def _sample_conditions(
        self, run_id: int, where: SampleFilter
    ) -> tuple[list[str], dict[str, Any]]:
        """SQL conditions on `samples s` and their parameters; only the filters given."""
        params: dict[str, Any] = {"run": run_id}
        conditions: list[str] = []
        if where.tag:
            conditions.append("list_contains(s.tags, $tag)")
            params["tag"] = where.tag
        if where.failing is not None:
            exists = "EXISTS (SELECT 1 FROM failures f WHERE f.run_id = $run AND f.sample_id = s.sample_id)"
            conditions.append(exists if where.failing else f"NOT {exists}")
        if where.detector:
            conditions.append(
                "s.sample_id IN (SELECT sample_id FROM issues WHERE run_id = $run AND detector = $detector)"
            )
            params["detector"] = where.detector
        if where.cluster is not None:
            conditions.append(
                "s.sample_id IN (SELECT sample_id FROM cluster_members WHERE cluster_id = $cluster "
                "AND clustering_id = (SELECT max(clustering_id) FROM clusterings WHERE run_id = $run))"
            )
            params["cluster"] = where.cluster
        if where.metric and (where.low is not None or where.high is not None):
            conditions.append(
                "s.sample_id IN (SELECT sample_id FROM sample_scores WHERE run_id = $run "
                "AND metric = $metric AND value >= $low AND value <= $high)"
            )
            params["metric"] = where.metric
            params["low"] = where.low if where.low is not None else float("-inf")
            params["high"] = where.high if where.high is not None else float("inf")
        if where.text:
            params["text"] = f"%{_escape_like(where.text)}%"
            conditions.append(
                "(s.instruction ILIKE $text ESCAPE '\\' OR s.input ILIKE $text ESCAPE '\\' "
                "OR array_to_string(s.refs, ' ') ILIKE $text ESCAPE '\\' "
                "OR s.sample_id IN (SELECT rg.sample_id FROM run_generations rg "
                "JOIN generations g ON g.cache_key = rg.cache_key "
                "WHERE rg.run_id = $run AND rg.draw = 0 AND g.text ILIKE $text ESCAPE '\\'))"
            )
        return conditions, params

    def sample_rows(self, run_id: int, sample_ids: list[str]) -> list[dict[str, Any]]:
        """The given samples in full (output, references, scores, issues, failure
        reasons, cluster), in the order given.

        One small query per table, each restricted to the page's ids, joined here: on
        100,000 samples that is several times faster than one query joining them all
        (DuckDB plans the big join as hash joins over whole tables)."""
        if not sample_ids:
            return []
        params = {"run": run_id, "ids": list(sample_ids)}
        page = "sample_id IN (SELECT unnest($ids))"
        rows = {
            r["sample_id"]: r
            for r in self.store.query(
                f"SELECT sample_id, position, instruction, input, refs AS \"references\", tags, group_id, "
                f"prompt FROM samples WHERE run_id = $run AND {page}",
                params,
            )
        }
        for r in rows.values():
            r.update(output=None, finish_reason=None, completion_tokens=None, scores={}, issues=[],
                     reasons=[], failing=False, cluster_id=None, cluster_label=None)
        for g in self.store.query(
            f"SELECT rg.sample_id, g.text AS output, g.finish_reason, g.completion_tokens "
            f"FROM run_generations rg JOIN generations g ON g.cache_key = rg.cache_key "
            f"WHERE rg.run_id = $run AND rg.draw = 0 AND rg.{page}",
            params,
        ):
            rows[g.pop("sample_id")].update(g)
        for sc in self.store.query(
            f"SELECT sample_id, metric, value FROM sample_scores WHERE run_id = $run AND {page}", params
        ):
            rows[sc["sample_id"]]["scores"][sc["metric"]] = sc["value"]
        for issue in self.store.query(
            f"SELECT sample_id, detector, kind, severity, message, span_start, span_end FROM issues "
            f"WHERE run_id = $run AND {page} ORDER BY severity DESC, detector, span_start",
            params,
        ):
            rows[issue.pop("sample_id")]["issues"].append(issue)
        for f in self.store.query(
            f"SELECT sample_id, reasons FROM failures WHERE run_id = $run AND {page}", params
        ):
            rows[f["sample_id"]].update(reasons=list(f["reasons"]), failing=True)
        clustering = self.latest_clustering(run_id)
        if clustering is not None:
            for m in self.store.query(
                f"SELECT m.sample_id, m.cluster_id, c.label AS cluster_label FROM cluster_members m "
                f"JOIN clusters c ON c.clustering_id = m.clustering_id AND c.cluster_id = m.cluster_id "
                f"WHERE m.clustering_id = $clustering AND m.{page}",
                {"clustering": clustering, "ids": list(sample_ids)},
            ):
                rows[m.pop("sample_id")].update(m)
        return [rows[s] for s in sample_ids if s in rows]

    def training_rows_for(self, run_id: int, sample_id: str, limit: int = 20) -> list[dict[str, Any]]:
        """Training rows gathered for this sample: rows added for its cluster in a
        dataset built from this run's clustering, or whose provenance names it."""
        return self._rows(
            self.store.query(
                """
                SELECT d.manifest_hash, r.position, r.instruction, r.input, r.output, r.source,
                       r.cluster, r.provenance
                FROM dataset_rows r
                JOIN datasets d ON d.manifest_hash = r.manifest_hash
                LEFT JOIN cluster_members m ON m.clustering_id = d.clustering_id
                     AND m.sample_id = $sample AND m.cluster_id = r.cluster
                WHERE (d.run_id = $run AND m.sample_id IS NOT NULL)
                   OR json_extract_string(r.provenance, '$.eval_sample') = $sample
                ORDER BY d.created_at, r.position
                LIMIT $limit
                """,
                {"run": run_id, "sample": sample_id, "limit": limit},
            )
        )

    # -- datasets -------------------------------------------------------------

    def datasets(self) -> list[dict[str, Any]]:
        rows = self.store.query(
            "SELECT manifest_hash, parent_hash, run_id, clustering_id, selection, sources, "
            "n_rows, n_added, path, created_at FROM datasets ORDER BY created_at DESC"
        )
        for row in rows:
            row["sources"] = _json(row["sources"])
        return rows

    def dataset(self, manifest_hash: str) -> dict[str, Any] | None:
        rows = self.store.query(
            "SELECT * FROM datasets WHERE manifest_hash = ? OR manifest_hash LIKE ? || '%' "
            "ORDER BY manifest_hash = ? DESC LIMIT 1",
            [manifest_hash, manifest_hash, manifest_hash],
        )
        if not rows:
            return None
        row = rows[0]
        for key in ("sources", "cluster_counts", "dropped", "decontaminated_against"):
            row[key] = _json(row[key])
        return row

    def dataset_rows(
        self, manifest_hash: str, *, source: str | None = None, offset: int = 0, limit: int = PAGE_SIZE
    ) -> Page:
        rows = self.store.query(
            """
            SELECT position, instruction, input, output, source, cluster, provenance,
                   count(*) OVER () AS total
            FROM dataset_rows WHERE manifest_hash = $hash AND ($source IS NULL OR source = $source)
            ORDER BY position LIMIT $limit OFFSET $offset
            """,
            {"hash": manifest_hash, "source": source, "limit": limit, "offset": offset},
        )
        total = int(rows[0]["total"]) if rows else 0
        return Page(self._rows(rows), total, offset, limit)

    # -- loops ----------------------------------------------------------------

    def training_curves(self, training_ids: list[int]) -> list[dict[str, Any]]:
        if not training_ids:
            return []
        return self.store.query(
            "SELECT training_id, step, split, loss FROM training_curves "
            "WHERE training_id IN (SELECT unnest($ids)) AND loss IS NOT NULL ORDER BY training_id, split, step",
            {"ids": training_ids},
        )

    def guard_scores(self, run_ids: list[int]) -> dict[int, dict[str, Any]]:
        """The main-metric score (with its interval) of each run."""
        if not run_ids:
            return {}
        rows = self.store.query(
            "SELECT r.run_id, c.metric, c.value, c.ci_low, c.ci_high FROM runs r "
            "JOIN corpus_scores c ON c.run_id = r.run_id AND c.metric = r.main_metric "
            "WHERE r.run_id IN (SELECT unnest($ids))",
            {"ids": run_ids},
        )
        return {r["run_id"]: r for r in rows}

    def added_by_source(self, manifest_hashes: list[str]) -> list[dict[str, Any]]:
        """Rows each dataset added over its parent, by source (its provenance summary)."""
        if not manifest_hashes:
            return []
        rows = self.store.query(
            "SELECT manifest_hash, selection, sources, n_added, n_rows FROM datasets "
            "WHERE manifest_hash IN (SELECT unnest($ids))",
            {"ids": manifest_hashes},
        )
        for row in rows:
            row["sources"] = _json(row["sources"])
        return rows

    @staticmethod
    def _rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for row in rows:
            row["provenance"] = _json(row.get("provenance"))
            row.pop("total", None)
        return rows


def _json(raw: Any) -> Any:
    return json.loads(raw) if isinstance(raw, str) else (raw if raw is not None else {})


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
