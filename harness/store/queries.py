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
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from harness.errors import ConfigError, HarnessError, NotFoundError
from harness.store import Store
from harness.store.core import fetch_arrow

if TYPE_CHECKING:
    from harness.stats import ScoreFn


class MetricLookup(Protocol):
    """Finds a metric plugin by name: the plugin `Registry` (kept abstract here so that the
    query layer, which the contracts name, does not depend on the registry)."""

    def metric(self, name: str, where: str = "") -> Any: ...

_LATEST = re.compile(r"^latest(?:~(\d+))?$")
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


# ---------------------------------------------------------------------------
# What the queries return
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    """A run's header: what ran, on what, how, and how it went (the `runs` row)."""

    run_id: int
    fingerprint: str
    suite_name: str
    suite_version: str
    suite_hash: str
    suite_path: str
    model_path: str
    adapter_path: str | None
    model_hash: str
    adapter_hash: str | None
    checkpoint_hash: str
    backend: str
    backend_options: dict[str, Any]
    model_info: dict[str, Any]
    prompt: dict[str, Any]
    generation: dict[str, Any]
    seed: int
    metrics: list[dict[str, Any]]
    detectors: list[dict[str, Any]]
    main_metric: str
    plugin_versions: dict[str, str]
    library_versions: dict[str, str]
    git_revision: str | None
    host: str | None
    n_samples: int
    label: str | None
    status: str
    error: str | None
    started_at: datetime
    finished_at: datetime | None
    generation_s: float | None
    scoring_s: float | None
    cluster_by: str | None = None
    """The suite's cluster_by when it ran (None: the rows' group)."""
    split: str | None = None
    """The suite's split the run evaluated; None for the whole suite (and older runs)."""

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def metric_names(self) -> list[str]:
        return [m["name"] for m in self.metrics]

    def metric_config(self, name: str) -> dict[str, Any]:
        return next((m for m in self.metrics if m["name"] == name), {"name": name, "args": {}})

    def detector_threshold(self, name: str) -> float | None:
        config = next((d for d in self.detectors if d["name"] == name), None)
        return None if config is None else config.get("threshold")

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class RunListing:
    """One line of a run list."""

    run_id: int
    suite_name: str
    suite_version: str
    model_path: str
    adapter_path: str | None
    status: str
    n_samples: int
    main_metric: str
    main_value: float | None
    label: str | None
    started_at: datetime
    failures: int
    split: str | None = None


@dataclass(frozen=True)
class CorpusScore:
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    higher_is_better: bool
    target: float | None
    passed: bool | None
    sample_threshold: float | None
    n: int


@dataclass(frozen=True)
class IssueSpan:
    """One issue on one sample."""

    detector: str
    kind: str
    severity: float
    message: str
    span_start: int | None
    span_end: int | None


@dataclass(frozen=True)
class SampleDetail:
    """Everything about one sample of a run."""

    sample_id: str
    position: int
    instruction: str
    input: str
    prompt: str
    output: str | None
    """None when the run has no generation for it (interrupted before it was generated)."""
    references: list[str]
    tags: list[str]
    finish_reason: str | None
    completion_tokens: int | None
    scores: dict[str, float | None]
    issues: list[IssueSpan]
    reasons: list[str]
    """Why it fails ('metric:chrf', 'detector:repetition'); empty when it passes."""


@dataclass(frozen=True)
class DetectorSummary:
    detector: str
    threshold: float | None
    issues: int
    samples: int
    """Samples with at least one issue."""
    failing: int
    """Samples failing because of this detector (an issue at or above its threshold)."""
    max_severity: float | None
    mean_severity: float | None


@dataclass(frozen=True)
class IssueExample:
    """A sample's issues from one detector, for showing the evidence."""

    detector: str
    sample_id: str
    position: int
    severity: float
    message: str
    kind: str
    count: int
    spans: list[tuple[int, int, str]]
    """(start, end, message) of every located issue of this detector on the sample."""
    output: str | None


@dataclass(frozen=True)
class RunError:
    plugin: str
    hook: str
    component: str | None
    sample_id: str | None
    message: str
    traceback: str | None
    created_at: datetime


@dataclass(frozen=True)
class SampleStats:
    """A metric's per-sample values and sufficient statistics (rows aligned)."""

    metric: str
    sample_ids: list[str]
    values: np.ndarray
    stats: np.ndarray
    """Shape (samples, k)."""


@dataclass(frozen=True)
class PairedStats:
    """One metric on the samples two runs share, aligned by sample (in run A's order)."""

    metric: str
    sample_ids: list[str]
    values_a: np.ndarray
    values_b: np.ndarray
    stats_a: np.ndarray
    stats_b: np.ndarray
    only_a: int
    """Samples scored in run A but not in B (left out of the comparison)."""
    only_b: int


@dataclass(frozen=True)
class Clustering:
    """The latest clustering of a run's failing samples, and its clusters."""

    clustering_id: int
    featurizer: str
    clusterer: str
    n_failures: int
    n_clusters: int
    unclustered: int
    created_at: datetime
    clusters: list[ClusterSummary] = field(default_factory=list)


@dataclass(frozen=True)
class ClusterSummary:
    cluster_id: int
    """-1 gathers the failures that no cluster took."""
    label: str
    size: int
    dominant_issue: str | None
    top_terms: list[str]
    mean_score: float | None
    score_metric: str | None
    examples: list[str]
    """Representative sample ids, nearest the centre first."""


@dataclass(frozen=True)
class LoopInfo:
    """A loop's settings and outcome."""

    loop_id: int
    suite_name: str
    guard_suite: str | None
    base_model: str
    config: dict[str, Any]
    output_dir: str
    status: str
    final_iteration: int | None
    stop_reason: str | None
    started_at: datetime
    finished_at: datetime | None
    mining_split: str | None = None
    """The split whose failures were mined; None for a loop made before splits existed,
    which mined and decided on the same samples."""
    heldout_split: str | None = None
    """The split decisions and reported gains come from."""
    split_auto: bool | None = None
    """True when the harness made the split (the suite declares none)."""
    split_sizes: dict[str, int] | None = None


@dataclass(frozen=True)
class IterationInfo:
    """One iteration of a loop, with the figures the history report shows."""

    iteration: int
    step: str
    checkpoint: dict[str, Any]
    eval_run_id: int | None
    guard_run_id: int | None
    clustering_id: int | None
    manifest_hash: str | None
    training_id: int | None
    compared_to: int | None
    comparison: dict[str, Any]
    decision: str | None
    reason: str | None
    accepted: bool | None
    tokens_trained: int | None
    tokens_evaluated: int | None
    cost: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None
    main_value: float | None = None
    main_ci: tuple[float | None, float | None] = (None, None)
    guard_value: float | None = None
    failing: int | None = None
    clusters: int | None = None
    rows_added: int | None = None
    rows_total: int | None = None
    training_seconds: float | None = None
    training_steps: int | None = None
    decision_rule: int | None = None
    """The rule the decision was taken under (`harness.loop.run.DECISION_RULE`); None: rule 1,
    decided before rules were numbered."""
    mining_run_id: int | None = None
    """The run on the mining split; eval_run_id is the held-out split's (or, in loops
    made before splits existed, the whole suite's)."""
    mining_value: float | None = None
    mining_failing: int | None = None


# ---------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------


class Queries:
    """Read-only questions about the store. `registry`, when given, lets views turn a
    metric's summed statistics back into a score (for paired tests)."""

    def __init__(self, store: Store, registry: MetricLookup | None = None):
        self.store = store
        self.registry = registry

    @contextmanager
    def session(self) -> Iterator[Queries]:
        """Keep one connection open for a series of queries (a report's build)."""
        with self.store.connect():
            yield self

    # -- runs -----------------------------------------------------------------

    def resolve(self, ref: str | int) -> int:
        """A run id from an id, 'latest' or 'latest~N'; unknown runs are errors."""
        text = str(ref).strip()
        match = _LATEST.match(text)
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

    # -- scores -----------------------------------------------------------------

    def corpus_scores(self, run_id: int) -> list[CorpusScore]:
        """Corpus scores in the suite's metric order."""
        rows = self.store.query(
            "SELECT metric, value, ci_low, ci_high, confidence, higher_is_better, target, passed, "
            "sample_threshold, n FROM corpus_scores WHERE run_id = ?",
            [run_id],
        )
        order = {name: i for i, name in enumerate(self._metric_names(run_id))}
        rows.sort(key=lambda r: (order.get(r["metric"], len(order)), r["metric"]))
        return [CorpusScore(**row) for row in rows]

    def sample_values(self, run_id: int) -> dict[str, np.ndarray]:
        """Every metric's per-sample values (NaN where a sample has none)."""
        table = self.store.query_arrow(
            "SELECT metric, list(value ORDER BY sample_id) AS vals FROM sample_scores "
            "WHERE run_id = ? GROUP BY metric",
            [run_id],
        )
        out = {}
        for metric, values in zip(
            table.column("metric").to_pylist(), table.column("vals").to_pylist()
        ):
            out[metric] = np.asarray([np.nan if v is None else v for v in values], dtype=float)
        return out

    def sample_stats(self, run_id: int, metric: str) -> SampleStats:
        """A metric's per-sample values and sufficient statistics, in sample order."""
        table = self.store.query_arrow(
            "SELECT sc.sample_id, sc.value, sc.stats FROM sample_scores sc "
            "JOIN samples s ON s.run_id = sc.run_id AND s.sample_id = sc.sample_id "
            "WHERE sc.run_id = ? AND sc.metric = ? ORDER BY s.position",
            [run_id, metric],
        )
        return SampleStats(
            metric=metric,
            sample_ids=table.column("sample_id").to_pylist(),
            values=_floats(table.column("value")),
            stats=_matrix(table.column("stats"), metric),
        )

    def sample_clusters(self, run_id: int, sample_ids: Sequence[str], cluster_by: str | None) -> np.ndarray:
        """Cluster labels (see `harness.stats.cluster_labels`) of the run's samples, in the
        order of `sample_ids`, from their stored group, tags and metadata."""
        from harness.stats import cluster_labels, sample_cluster_key

        rows = self.store.query(
            "SELECT sample_id, group_id, tags, metadata FROM samples WHERE run_id = ?", [run_id]
        )
        by_id = {r["sample_id"]: r for r in rows}
        keys: list[Any] = []
        for sample_id in sample_ids:
            row = by_id.get(sample_id)
            if row is None:
                keys.append(None)
                continue
            metadata = row["metadata"]
            metadata = json.loads(metadata) if isinstance(metadata, str) else (metadata or {})
            keys.append(sample_cluster_key(cluster_by, row["group_id"], row["tags"] or [], metadata))
        return cluster_labels(keys)

    def paired_stats(self, run_a: int, run_b: int, metric: str) -> PairedStats:
        """A metric's statistics on the samples both runs scored, aligned by sample id."""
        table = self.store.query_arrow(
            """
            SELECT a.sample_id, a.value AS value_a, b.value AS value_b, a.stats AS stats_a, b.stats AS stats_b
            FROM sample_scores a
            JOIN sample_scores b ON b.run_id = $b AND b.metric = a.metric AND b.sample_id = a.sample_id
            JOIN samples s ON s.run_id = a.run_id AND s.sample_id = a.sample_id
            WHERE a.run_id = $a AND a.metric = $metric
            ORDER BY s.position
            """,
            {"a": run_a, "b": run_b, "metric": metric},
        )
        counts = self.store.query(
            "SELECT run_id, count(*) AS n FROM sample_scores WHERE run_id IN ($a, $b) AND metric = $metric "
            "GROUP BY run_id",
            {"a": run_a, "b": run_b, "metric": metric},
        )
        per_run = {row["run_id"]: row["n"] for row in counts}
        paired = table.num_rows
        return PairedStats(
            metric=metric,
            sample_ids=table.column("sample_id").to_pylist(),
            values_a=_floats(table.column("value_a")),
            values_b=_floats(table.column("value_b")),
            stats_a=_matrix(table.column("stats_a"), metric),
            stats_b=_matrix(table.column("stats_b"), metric),
            only_a=per_run.get(run_a, 0) - paired,
            only_b=per_run.get(run_b, 0) - paired if run_b != run_a else 0,
        )

    def score_function(self, run: RunInfo, metric: str) -> ScoreFn:
        """Summed statistics -> score, with the arguments the run used for `metric`.

        Needs the registry (the plugin that provides the metric must be loaded)."""
        if self.registry is None:
            raise HarnessError(
                "this query needs the plugin registry: build Queries(store, registry)"
            )
        component = self.registry.metric(metric, where=f"run {run.run_id}")
        from harness.suite.files import validate_args

        args = validate_args(
            component,
            run.metric_config(metric).get("args") or {},
            f"run {run.run_id}: metric {metric!r}",
        )
        return lambda totals: component.from_statistics(totals, args)

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
        rows = {d.sample_id: d for d in _details(self.samples(run_id, sample_ids=sample_ids))}
        return [rows[s] for s in sample_ids if s in rows]

    def worst_samples(
        self, run_id: int, metric: str | None = None, limit: int = 10
    ) -> list[SampleDetail]:
        """The samples that score worst on `metric` (the run's main metric by default);
        ties go to the sample with the most severe issue."""
        metric = metric or self.run(run_id).main_metric
        return _details(self.samples(run_id, worst_by=metric, limit=limit))

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

    def has_table(self, name: str) -> bool:
        return bool(
            self._scalar(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]
            )
        )

    # -- loops ----------------------------------------------------------------------

    def resolve_loop(self, ref: str | int) -> int:
        """A loop id from an id, 'latest' or 'latest~N'; unknown loops are errors."""
        text = str(ref).strip()
        if not self.has_table("loops"):
            raise NotFoundError(f"store {self.store.path} has no loops: run `harness loop` first")
        match = _LATEST.match(text)
        if match:
            loop_id = self._scalar(
                "SELECT loop_id FROM loops ORDER BY loop_id DESC LIMIT 1 OFFSET ?", [int(match.group(1) or 0)]
            )
            if loop_id is None:
                raise NotFoundError(f"store {self.store.path} has no loops (that far back): run `harness loop`")
            return int(loop_id)
        if not text.isdigit():
            raise ConfigError(f"{text!r} is not a loop: give a loop id, 'latest' or 'latest~N'")
        if not self._scalar("SELECT count(*) FROM loops WHERE loop_id = ?", [int(text)]):
            known = [r["loop_id"] for r in self.store.query("SELECT loop_id FROM loops ORDER BY 1 DESC LIMIT 5")]
            raise NotFoundError(
                f"no loop {text} in store {self.store.path}"
                + (f": the newest are {', '.join(map(str, known))}" if known else ": it has no loops yet")
            )
        return int(text)

    def loop(self, ref: str | int) -> LoopInfo:
        loop_id = self.resolve_loop(ref)
        row = self.store.query(
            "SELECT loop_id, suite_name, guard_suite, base_model, config, output_dir, status, final_iteration, "
            "stop_reason, started_at, finished_at, mining_split, heldout_split, split_auto, split_sizes "
            "FROM loops WHERE loop_id = ?",
            [loop_id],
        )[0]
        row["config"] = json.loads(row["config"]) if row["config"] else {}
        row["split_sizes"] = json.loads(row["split_sizes"]) if row["split_sizes"] else None
        return LoopInfo(**row)

    def loops(self, limit: int = 20) -> list[LoopInfo]:
        if not self.has_table("loops"):
            return []
        ids = [r["loop_id"] for r in self.store.query("SELECT loop_id FROM loops ORDER BY 1 DESC LIMIT ?", [limit])]
        return [self.loop(i) for i in ids]

    def budget_notes(self, manifest_hash: str) -> dict[str, str]:
        """Cluster id (as text) -> why the rows a dataset added for it were not its share
        by size (see `harness.data.datasets.cluster_weights`); empty when every share was."""
        rows = self.store.query(
            "SELECT r.cluster, r.provenance FROM dataset_rows r JOIN datasets d USING (manifest_hash) "
            "WHERE r.manifest_hash = ? AND r.position >= d.n_rows - d.n_added "
            "AND r.provenance LIKE '%budget_reason%' ORDER BY r.position",
            [manifest_hash],
        )
        notes: dict[str, str] = {}
        for row in rows:
            reason = json.loads(row["provenance"]).get("budget_reason")
            if reason and row["cluster"] is not None:
                notes.setdefault(str(row["cluster"]), str(reason))
        return dict(sorted(notes.items()))

    def iterations(self, loop_id: int) -> list[IterationInfo]:
        """Every iteration of a loop with its main metric, guard metric, failures,
        clusters, data and training figures."""
        rows = self.store.query(
            """
            SELECT i.*,
                   ms.value AS main_value, ms.ci_low AS main_low, ms.ci_high AS main_high,
                   gs.value AS guard_value,
                   (SELECT count(*) FROM failures f WHERE f.run_id = i.eval_run_id) AS failing,
                   mv.value AS mining_value,
                   (SELECT count(*) FROM failures f WHERE f.run_id = i.mining_run_id) AS mining_failing,
                   (SELECT count(*) FROM clusters c WHERE c.clustering_id = i.clustering_id AND c.cluster_id >= 0)
                       AS clusters,
                   d.n_added AS rows_added, d.n_rows AS rows_total,
                   t.wall_time_s AS training_seconds, t.steps AS training_steps
            FROM iterations i
            LEFT JOIN runs r ON r.run_id = i.eval_run_id
            LEFT JOIN corpus_scores ms ON ms.run_id = i.eval_run_id AND ms.metric = r.main_metric
            LEFT JOIN corpus_scores mv ON mv.run_id = i.mining_run_id AND mv.metric = r.main_metric
            LEFT JOIN runs gr ON gr.run_id = i.guard_run_id
            LEFT JOIN corpus_scores gs ON gs.run_id = i.guard_run_id AND gs.metric = gr.main_metric
            LEFT JOIN datasets d ON d.manifest_hash = i.manifest_hash
            LEFT JOIN training_runs t ON t.training_id = i.training_id
            WHERE i.loop_id = ?
            ORDER BY i.iteration
            """,
            [loop_id],
        )
        out = []
        known = IterationInfo.__dataclass_fields__
        for row in rows:
            for key in ("checkpoint", "comparison", "cost"):
                raw = row.get(key)
                row[key] = json.loads(raw) if isinstance(raw, str) else (raw or {})
            row["main_ci"] = (row.pop("main_low"), row.pop("main_high"))
            if row.get("mining_run_id") is None:
                row["mining_failing"] = None
            out.append(IterationInfo(**{k: v for k, v in row.items() if k in known}))
        return out

    # -- ad-hoc SQL ---------------------------------------------------------------

    def sql(self, query: str) -> pa.Table:
        """The result of read-only SQL (SELECT, DESCRIBE, EXPLAIN, PRAGMA, CALL).

        The query runs in `Store.sandbox()`: DuckDB opens the file read-only with file
        system access and configuration changes disabled, so neither `COPY ... TO`,
        `ATTACH`, `EXPORT`, `INSTALL`/`LOAD` nor `SET` can reach beyond the query."""
        if not self.store.read_only:
            raise HarnessError("ad-hoc SQL runs only on a store opened read-only (Store.reader)")
        try:
            statements = duckdb.extract_statements(query)
        except duckdb.Error as exc:
            raise ConfigError(f"SQL error: {_first_line(exc)}") from None
        if not statements:
            raise ConfigError("SQL error: the query is empty")
        for statement in statements:
            if statement.type not in _READ_STATEMENTS:
                kind = statement.type.name
                raise ConfigError(
                    f"SQL error: {kind} statements are refused; `harness sql` is read-only "
                    "(SELECT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN, PRAGMA, CALL)"
                )
        try:
            with self.store.sandbox() as con:
                return fetch_arrow(con.sql(query))
        except duckdb.Error as exc:
            raise ConfigError(f"SQL error: {_first_line(exc)}") from None

    # -- helpers ----------------------------------------------------------------

    def _scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        # Fetches every row, so that no half-read result is left on a shared connection
        # (DuckDB refuses the next query on it).
        rows = self.store.query(sql, params)
        return next(iter(rows[0].values())) if rows else None

    def _metric_names(self, run_id: int) -> list[str]:
        raw = self._scalar("SELECT metrics FROM runs WHERE run_id = ?", [run_id])
        configured = [m["name"] for m in json.loads(raw)] if raw else []
        stored = [
            r["metric"]
            for r in self.store.query(
                "SELECT DISTINCT metric FROM corpus_scores WHERE run_id = ? ORDER BY metric",
                [run_id],
            )
        ]
        return configured + [m for m in stored if m not in configured]

    def _higher_is_better(self, run_id: int, metric: str) -> bool:
        value = self._scalar(
            "SELECT higher_is_better FROM corpus_scores WHERE run_id = ? AND metric = ?",
            [run_id, metric],
        )
        if value is None:
            raise NotFoundError(
                f"run {run_id} has no scores for metric {metric!r}; it has: "
                f"{', '.join(self._metric_names(run_id)) or 'none'}"
            )
        return bool(value)


def _ident(name: str) -> str:
    return name.replace('"', '""')


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _floats(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)


def _matrix(column: pa.ChunkedArray, metric: str) -> np.ndarray:
    """A list<double> column as an (n, k) array; every row must have the same k."""
    array = column.combine_chunks()
    if len(array) == 0:
        return np.zeros((0, 0))
    lengths = pc.list_value_length(array)
    low, high = pc.min(lengths).as_py(), pc.max(lengths).as_py()
    if low != high:
        raise HarnessError(
            f"metric {metric!r} stored statistics of different lengths ({low} and {high}) for one run; "
            "its statistics cannot be summed"
        )
    return np.asarray(array.flatten().to_numpy(zero_copy_only=False), dtype=float).reshape(
        len(array), low
    )


def _details(table: pa.Table) -> list[SampleDetail]:
    out = []
    for row in table.to_pylist():
        out.append(
            SampleDetail(
                sample_id=row["sample_id"],
                position=row["position"],
                instruction=row["instruction"],
                input=row["input"],
                prompt=row["prompt"],
                output=row["output"],
                references=list(row["references"] or ()),
                tags=list(row["tags"] or ()),
                finish_reason=row["finish_reason"],
                completion_tokens=row["completion_tokens"],
                scores=dict(row["scores"] or {}),
                issues=[IssueSpan(**issue) for issue in row["issues"] or ()],
                reasons=list(row["reasons"] or ()),
            )
        )
    return out


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


_READ_STATEMENTS = frozenset(
    {
        duckdb.StatementType.SELECT,
        duckdb.StatementType.EXPLAIN,
        duckdb.StatementType.PRAGMA,
        duckdb.StatementType.CALL,
    }
)
"""Statement kinds `Queries.sql` runs; the sandbox would refuse most others anyway."""


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
