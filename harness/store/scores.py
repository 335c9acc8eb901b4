"""The read side's questions about scores: corpus scores, per-sample values and
statistics, the pairing of two runs' samples, and turning summed statistics back into
a score. `Queries` answers them with the rest; the paired tests of
`harness.score.comparison` and the reports build on them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from harness.errors import HarnessError, NotFoundError
from harness.store.reader import StoreReader
from harness.store.results import CorpusScore, PairedStats, RunInfo, SampleStats

if TYPE_CHECKING:
    from harness.stats import ScoreFn


class ScoreQueries(StoreReader):
    """Read-only questions about a run's scores."""

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
