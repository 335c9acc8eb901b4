"""The read-only query layer over the store: what report views and the CLI read.

    from harness.store.queries import Queries
    with Store.reader() as store:
        q = Queries(store)
        run = q.run("latest")
        worst = q.worst_samples(run.run_id, limit=5)

Every method is one or two DuckDB queries that fetch columns in bulk (Arrow), never a
query per sample, so that a report over a run of 10,000 samples builds in well under a
second. Run references accept an id, `latest`, or `latest~N` (the N-th run before the
latest); an unknown one is an error that says which runs exist.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from harness.errors import ConfigError, NotFoundError
from harness.store.loops import LoopQueries
from harness.store.reader import LATEST
from harness.store.results import (
    Clustering,
    ClusterSummary,
    CorpusScore,
    DetectorSummary,
    IssueExample,
    IssueSpan,
    PairedStats,
    RunError,
    RunInfo,
    RunListing,
    SampleDetail,
    SampleStats,
    details_from_table,
)
from harness.store.sandbox import read_only_sql
from harness.store.scores import ScoreQueries

_JSON_COLUMNS = (
    "backend_options",
    "model_info",
    "prompt",
    "generation",
    "metrics",
    "detectors",
    "plugin_versions",
    "library_versions",
)
"""The columns of `runs` stored as JSON text."""


class Queries(ScoreQueries, LoopQueries):
    """Read-only questions about the store. `registry`, when given, lets views turn a
    metric's summed statistics back into a score (for paired tests).

    The questions about scores are `ScoreQueries`' (harness.store.scores), those about
    loops `LoopQueries`' (harness.store.loops); the runs, samples, issues, errors and
    clusterings are asked here."""

    # -- runs -----------------------------------------------------------------

    def resolve(self, ref: str | int) -> int:
        """A run id from an id, 'latest' or 'latest~N'; unknown runs are errors."""
        text = str(ref).strip()
        match = LATEST.match(text)
        if match:
            back = int(match.group(1) or 0)
            run_id = self._scalar(
                "SELECT run_id FROM runs ORDER BY run_id DESC LIMIT 1 OFFSET ?", [back]
            )
            if run_id is None:
                count = self._scalar("SELECT count(*) FROM runs")
                if not count:
                    raise NotFoundError(
                        f"store {self.store.path} has no runs yet: run `harness eval` first"
                    )
                raise NotFoundError(
                    f"{text!r} goes back {back} run(s), but store {self.store.path} has only "
                    f"{count}; `harness runs` lists them"
                )
            return int(run_id)
        if not text.isdigit():
            raise ConfigError(
                f"{text!r} is not a run: give a run id (`harness runs` lists them), "
                "'latest', or 'latest~N' for the N-th run before the latest"
            )
        run_id = int(text)
        if self._scalar("SELECT count(*) FROM runs WHERE run_id = ?", [run_id]):
            return run_id
        newest = [
            r["run_id"]
            for r in self.store.query("SELECT run_id FROM runs ORDER BY run_id DESC LIMIT 5")
        ]
        known = f"the newest are {', '.join(map(str, newest))}" if newest else "it has no runs yet"
        raise NotFoundError(
            f"no run {run_id} in store {self.store.path}: {known}; `harness runs` lists them"
        )

    def run(self, ref: str | int) -> RunInfo:
        run_id = self.resolve(ref)
        row = self.store.query("SELECT * FROM runs WHERE run_id = ?", [run_id])[0]
        for name in _JSON_COLUMNS:
            raw = row.get(name)
            row[name] = (
                json.loads(raw) if isinstance(raw, str) else (raw if raw is not None else {})
            )
        known = RunInfo.__dataclass_fields__
        return RunInfo(**{k: v for k, v in row.items() if k in known})

    def runs(self, *, suite: str | None = None, limit: int | None = 20) -> list[RunListing]:
        """Runs, newest first."""
        rows = self.store.query(
            """
            SELECT r.run_id, r.suite_name, r.suite_version, r.model_path, r.adapter_path, r.status,
                   r.n_samples, r.main_metric, c.value AS main_value, r.label, r.started_at,
                   coalesce(f.failures, 0) AS failures, r.split
            FROM runs r
            LEFT JOIN corpus_scores c ON c.run_id = r.run_id AND c.metric = r.main_metric
            LEFT JOIN (SELECT run_id, count(*) AS failures FROM failures GROUP BY run_id) f
                   ON f.run_id = r.run_id
            WHERE $suite IS NULL OR r.suite_name = $suite
            ORDER BY r.run_id DESC
            LIMIT $limit  -- NULL: no limit
            """,
            {"suite": suite, "limit": limit},
        )
        return [RunListing(**row) for row in rows]

    def run_rows(self, *, suite: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Runs, newest first, as plain rows with how long each took (`seconds`) and how
        many of its samples fail: what `harness runs` lists."""
        return self.store.query(
            """
            SELECT r.run_id, r.suite_name, r.suite_version, r.model_path, r.adapter_path, r.status,
                   r.n_samples, r.main_metric, c.value AS main_value, r.label, r.started_at, r.split,
                   epoch(r.finished_at) - epoch(r.started_at) AS seconds,
                   (SELECT count(*) FROM failures f WHERE f.run_id = r.run_id) AS failures
            FROM runs r
            LEFT JOIN corpus_scores c ON c.run_id = r.run_id AND c.metric = r.main_metric
            WHERE ? IS NULL OR r.suite_name = ?
            ORDER BY r.run_id DESC LIMIT ?
            """,
            [suite, suite, limit],
        )

    def sample_ids(self, run_id: int) -> list[str]:
        """The ids of the run's samples, in suite order."""
        return [
            r["sample_id"]
            for r in self.store.query("SELECT sample_id FROM samples WHERE run_id = ? ORDER BY position", [run_id])
        ]

    # -- samples ----------------------------------------------------------------

    def samples(
        self,
        run_id: int,
        *,
        sample_ids: Sequence[str] | None = None,
        worst_by: str | None = None,
        limit: int | None = None,
    ) -> pa.Table:
        """The per-sample table: prompt, output, references, scores (a struct with one
        field per metric), issues (a list of structs, most severe first) and failure
        reasons. In sample order, or worst first by the metric `worst_by`."""
        metrics = self._metric_names(run_id)
        # One struct field per metric: a run's metrics are fixed, so pivot in SQL.
        fields = ", ".join(
            f'"{_ident(m)}" := max(value) FILTER (WHERE metric = {_literal(m)})' for m in metrics
        )
        scores = f"struct_pack({fields})" if fields else "NULL"
        params: dict[str, Any] = {"run": run_id, "order_metric": worst_by or "", "limit": limit}
        where = ""
        if sample_ids is not None:
            where = "AND s.sample_id IN (SELECT unnest($ids))"
            params["ids"] = list(sample_ids)
        order = "s.position"
        if worst_by is not None:
            lower_first = self._higher_is_better(run_id, worst_by)
            direction = "ASC" if lower_first else "DESC"
            order = f"sc.order_value {direction} NULLS LAST, iss.max_severity DESC NULLS LAST, s.position"
        return self.store.query_arrow(
            f"""
            WITH sc AS (
                SELECT sample_id, {scores} AS scores,
                       max(value) FILTER (WHERE metric = $order_metric) AS order_value
                FROM sample_scores WHERE run_id = $run GROUP BY sample_id
            ), iss AS (
                SELECT sample_id, max(severity) AS max_severity,
                       list(struct_pack(detector := detector, kind := kind, severity := severity,
                                        message := message, span_start := span_start,
                                        span_end := span_end)
                            ORDER BY severity DESC, detector, span_start) AS issues
                FROM issues WHERE run_id = $run GROUP BY sample_id
            )
            SELECT s.position, s.sample_id, s.instruction, s.input, s.prompt, s.refs AS "references",
                   s.tags, s.group_id, g.text AS output, g.finish_reason, g.prompt_tokens,
                   g.completion_tokens, g.latency_s, rg.cached, sc.scores, iss.issues,
                   coalesce(f.reasons, []::VARCHAR[]) AS reasons
            FROM samples s
            LEFT JOIN run_generations rg ON rg.run_id = s.run_id AND rg.sample_id = s.sample_id AND rg.draw = 0
            LEFT JOIN generations g ON g.cache_key = rg.cache_key
            LEFT JOIN sc ON sc.sample_id = s.sample_id
            LEFT JOIN iss ON iss.sample_id = s.sample_id
            LEFT JOIN failures f ON f.run_id = s.run_id AND f.sample_id = s.sample_id
            WHERE s.run_id = $run {where}
            ORDER BY {order}
            LIMIT $limit  -- NULL: no limit
            """,
            params,
        )

    def sample_details(self, run_id: int, sample_ids: Sequence[str]) -> list[SampleDetail]:
        """Full rows for the given samples, in the order given."""
        rows = {d.sample_id: d for d in details_from_table(self.samples(run_id, sample_ids=sample_ids))}
        return [rows[s] for s in sample_ids if s in rows]

    def worst_samples(
        self, run_id: int, metric: str | None = None, limit: int = 10
    ) -> list[SampleDetail]:
        """The samples that score worst on `metric` (the run's main metric by default);
        ties go to the sample with the most severe issue."""
        metric = metric or self.run(run_id).main_metric
        return details_from_table(self.samples(run_id, worst_by=metric, limit=limit))

    def failing_count(self, run_id: int) -> int:
        return int(self._scalar("SELECT count(*) FROM failures WHERE run_id = ?", [run_id]) or 0)

    def failure_reasons(self, run_id: int) -> dict[str, int]:
        """How many samples fail for each reason ('metric:chrf', 'detector:repetition')."""
        rows = self.store.query(
            "SELECT reason, count(*) AS n FROM (SELECT unnest(reasons) AS reason FROM failures "
            "WHERE run_id = ?) GROUP BY reason ORDER BY n DESC, reason",
            [run_id],
        )
        return {row["reason"]: int(row["n"]) for row in rows}

    # -- issues -----------------------------------------------------------------

    def detector_summaries(self, run_id: int) -> list[DetectorSummary]:
        """Every detector the run used (even those that found nothing), in suite order."""
        run = self.run(run_id)
        rows = {
            row["detector"]: row
            for row in self.store.query(
                "SELECT detector, count(*) AS issues, count(DISTINCT sample_id) AS samples, "
                "max(severity) AS max_severity, avg(severity) AS mean_severity "
                "FROM issues WHERE run_id = ? GROUP BY detector",
                [run_id],
            )
        }
        reasons = self.failure_reasons(run_id)
        names = [d["name"] for d in run.detectors] + sorted(
            set(rows) - {d["name"] for d in run.detectors}
        )
        out = []
        for name in names:
            row = rows.get(name, {})
            out.append(
                DetectorSummary(
                    detector=name,
                    threshold=run.detector_threshold(name),
                    issues=int(row.get("issues", 0)),
                    samples=int(row.get("samples", 0)),
                    failing=reasons.get(f"detector:{name}", 0),
                    max_severity=row.get("max_severity"),
                    mean_severity=row.get("mean_severity"),
                )
            )
        return out

    def issue_examples(self, run_id: int, per_detector: int = 3) -> dict[str, list[IssueExample]]:
        """For each detector, the samples with its most severe issues, with their output
        and every span the detector marked on them."""
        table = self.store.query_arrow(
            """
            WITH per_sample AS (
                SELECT detector, sample_id, max(severity) AS severity,
                       arg_max(message, severity) AS message, arg_max(kind, severity) AS kind,
                       count(*) AS n,
                       list(struct_pack(start := span_start, stop := span_end, message := message)
                            ORDER BY span_start) FILTER (WHERE span_start IS NOT NULL) AS spans
                FROM issues WHERE run_id = $run GROUP BY detector, sample_id
            )
            SELECT p.detector, p.sample_id, s.position, p.severity, p.message, p.kind, p.n, p.spans,
                   g.text AS output
            FROM per_sample p
            JOIN samples s ON s.run_id = $run AND s.sample_id = p.sample_id
            LEFT JOIN run_generations rg ON rg.run_id = $run AND rg.sample_id = p.sample_id AND rg.draw = 0
            LEFT JOIN generations g ON g.cache_key = rg.cache_key
            QUALIFY row_number() OVER (PARTITION BY p.detector ORDER BY p.severity DESC, s.position) <= $k
            ORDER BY p.detector, p.severity DESC, s.position
            """,
            {"run": run_id, "k": per_detector},
        )
        out: dict[str, list[IssueExample]] = {}
        for row in table.to_pylist():
            out.setdefault(row["detector"], []).append(
                IssueExample(
                    detector=row["detector"],
                    sample_id=row["sample_id"],
                    position=row["position"],
                    severity=row["severity"],
                    message=row["message"],
                    kind=row["kind"],
                    count=row["n"],
                    spans=[(s["start"], s["stop"], s["message"]) for s in row["spans"] or ()],
                    output=row["output"],
                )
            )
        return out

    # -- errors and clusters ------------------------------------------------------

    def errors(self, run_id: int) -> list[RunError]:
        """Plugin failures recorded against the run."""
        rows = self.store.query(
            "SELECT plugin, hook, component, sample_id, message, traceback, created_at "
            "FROM run_errors WHERE run_id = ? ORDER BY created_at, plugin, hook, sample_id",
            [run_id],
        )
        return [RunError(**row) for row in rows]

    def clustering(self, run_id: int) -> Clustering | None:
        """The run's latest clustering of its failing samples (clusters largest first,
        the unclustered rest last), or None when it has not been clustered."""
        if not self.has_table("clusterings"):
            return None  # a store from before clustering existed
        rows = self.store.query(
            "SELECT clustering_id, featurizer, clusterer, n_failures, n_clusters, unclustered, created_at "
            "FROM clusterings WHERE run_id = ? ORDER BY clustering_id DESC LIMIT 1",
            [run_id],
        )
        if not rows:
            return None
        clusters = self.store.query(
            "SELECT cluster_id, label, size, dominant_issue, top_terms, mean_score, score_metric, examples "
            "FROM clusters WHERE clustering_id = ? ORDER BY cluster_id = -1, size DESC, cluster_id",
            [rows[0]["clustering_id"]],
        )
        return Clustering(**rows[0], clusters=[ClusterSummary(**c) for c in clusters])

    # -- ad-hoc SQL ---------------------------------------------------------------

    def sql(self, query: str) -> pa.Table:
        """The result of read-only SQL (SELECT, DESCRIBE, EXPLAIN, PRAGMA, CALL).

        The query runs in `Store.sandbox()`: DuckDB opens the file read-only with file
        system access and configuration changes disabled, so neither `COPY ... TO`,
        `ATTACH`, `EXPORT`, `INSTALL`/`LOAD` nor `SET` can reach beyond the query."""
        return read_only_sql(self.store, query)


def _ident(name: str) -> str:
    return name.replace('"', '""')


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


__all__ = [
    "ClusterSummary",
    "Clustering",
    "CorpusScore",
    "DetectorSummary",
    "IssueExample",
    "IssueSpan",
    "PairedStats",
    "Queries",
    "RunError",
    "RunInfo",
    "RunListing",
    "SampleDetail",
    "SampleStats",
]
