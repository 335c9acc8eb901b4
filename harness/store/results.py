"""What the query layer returns: plain frozen values, one per kind of answer.

Run headers and listings, corpus scores, samples with their issues, detector summaries,
errors, clusterings, loops and their iterations, and the per-sample statistics the
paired tests need. `harness.store.queries.Queries` builds them; report views and the
CLI read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    pass


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
    """The rule the decision was taken under (`harness.loop.decide.DECISION_RULE`); None: rule 1,
    decided before rules were numbered."""
    mining_run_id: int | None = None
    """The run on the mining split; eval_run_id is the held-out split's (or, in loops
    made before splits existed, the whole suite's)."""
    mining_value: float | None = None
    mining_failing: int | None = None


def details_from_table(table: pa.Table) -> list[SampleDetail]:
    """One `SampleDetail` per row of a `Queries.samples` table."""
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
