"""Scoring a run: metrics and detectors over all its items, and which samples fail.

Pure: takes items, returns values. A component that raises on one sample does not stop
the others: the batch is retried sample by sample, and each failure becomes a
`ComponentError` naming the plugin, the hook and the sample.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel

from harness.components.contracts import Detector, Metric, Needs
from harness.components.registry import Registry
from harness.stats import bootstrap_ci, cluster_labels, sample_cluster_key
from harness.suite.config import DetectorConfig, MetricConfig
from harness.suite.files import validate_args
from harness.suite.load import Suite
from harness.types import ComponentError, Issue, Item, MetricOutcome, ScoringResult

T = TypeVar("T")


@dataclass(frozen=True)
class ResolvedMetric:
    config: MetricConfig
    metric: Metric
    args: BaseModel
    plugin: str

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class ResolvedDetector:
    config: DetectorConfig
    detector: Detector
    args: BaseModel
    plugin: str

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(frozen=True)
class Components:
    metrics: list[ResolvedMetric]
    detectors: list[ResolvedDetector]

    def needs(self) -> Needs:
        """What the components need beyond draw-0 outputs, merged."""
        wanted = [m.metric.needs(m.args) for m in self.metrics] + [
            d.detector.needs(d.args) for d in self.detectors
        ]
        draws = max((n.draws for n in wanted), default=0)
        temperature = next((n.draw_temperature for n in wanted if n.draws == draws and draws), 0.8)
        return Needs(
            draws=draws,
            draw_temperature=temperature,
            reference_nll=any(n.reference_nll for n in wanted),
        )


def resolve_components(suite: Suite, registry: Registry) -> Components:
    """The suite's metrics and detectors with validated arguments; unknown names and bad
    arguments are errors that name the suite file and the entry."""
    metrics = []
    for i, cfg in enumerate(suite.config.metrics):
        reg = registry.get("metric", cfg.name, where=suite.where("metrics", i, "name"))
        args = validate_args(reg.component, cfg.args, suite.where("metrics", i, "args", label=f"metrics[{i}] ({cfg.name}).args"))
        metrics.append(ResolvedMetric(cfg, reg.component, args, reg.plugin.name))
    detectors = []
    for i, detector_cfg in enumerate(suite.config.detectors):
        reg = registry.get("detector", detector_cfg.name, where=suite.where("detectors", i, "name"))
        args = validate_args(
            reg.component,
            detector_cfg.args,
            suite.where("detectors", i, "args", label=f"detectors[{i}] ({detector_cfg.name}).args"),
        )
        detectors.append(ResolvedDetector(detector_cfg, reg.component, args, reg.plugin.name))
    return Components(metrics, detectors)


def _isolated(
    call: Callable[[Sequence[Item]], Sequence[T]],
    items: Sequence[Item],
    plugin: str,
    hook: str,
    component: str,
) -> tuple[list[T | None], list[ComponentError]]:
    """Call on all items; if that raises, call item by item to find the culprits."""
    try:
        results = list(call(items))
        if len(results) != len(items):
            raise ValueError(f"returned {len(results)} results for {len(items)} samples")
        return results, []  # type: ignore[return-value]
    except Exception:
        pass
    out: list[T | None] = []
    errors = []
    for item in items:
        try:
            single = list(call([item]))
            if len(single) != 1:
                raise ValueError(f"returned {len(single)} results for 1 sample")
            out.append(single[0])
        except Exception as exc:
            out.append(None)
            errors.append(
                ComponentError(
                    plugin=plugin,
                    hook=hook,
                    component=component,
                    message=f"{type(exc).__name__}: {exc}",
                    sample_id=item.sample.id,
                    traceback=traceback.format_exc(),
                )
            )
    return out, errors


def score_metric(
    resolved: ResolvedMetric,
    items: Sequence[Item],
    *,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
    cluster_by: str | None = None,
) -> tuple[MetricOutcome, list[ComponentError]]:
    """A metric over the items, with a bootstrap interval that resamples the suite's
    clusters (`cluster_by`, see `harness.stats.sample_cluster_key`) when it has any."""
    metric, args = resolved.metric, resolved.args

    def stats_of(batch: Sequence[Item]) -> list[np.ndarray]:
        stats = np.asarray(metric.statistics(batch, args), dtype=float)
        if stats.ndim != 2 or len(stats) != len(batch):
            raise ValueError(f"statistics must have shape (samples, k), got {stats.shape}")
        return list(stats)

    rows, errors = _isolated(stats_of, items, resolved.plugin, "Metric.statistics", resolved.name)
    rows = _drop_non_finite(rows, items, resolved, errors)
    kept = [(item, row) for item, row in zip(items, rows) if row is not None]
    width = len(kept[0][1]) if kept else 0
    stats = np.asarray([row for _, row in kept], dtype=float).reshape(len(kept), width)
    score = lambda totals: metric.from_statistics(totals, args)  # noqa: E731
    values, corpus, low, high = np.zeros(0), float("nan"), float("nan"), float("nan")
    if len(kept):
        # The corpus step runs once over all samples: a plugin that raises here is
        # recorded like a failing detector, and the run goes on without this score.
        hook = "Metric.sample_scores"
        try:
            values = np.asarray(metric.sample_scores(stats, args), dtype=float).reshape(len(kept))
            errors.extend(_non_finite_values(values, [item for item, _ in kept], resolved))
            hook = "Metric.from_statistics"
            corpus = float(score(stats.sum(axis=0)))
            clusters = cluster_labels(
                [sample_cluster_key(cluster_by, i.sample.group, i.sample.tags, i.sample.metadata) for i, _ in kept]
            )
            low, high = bootstrap_ci(
                stats, score, confidence=confidence, resamples=resamples, seed=seed, clusters=clusters
            )
        except Exception as exc:
            errors.append(_corpus_error(resolved, hook, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            if values.shape != (len(kept),):
                values = np.full(len(kept), np.nan)
            corpus, low, high = float("nan"), float("nan"), float("nan")
        else:
            if not math.isfinite(corpus):
                errors.append(_corpus_error(resolved, hook, f"from_statistics returned {corpus} for the corpus"))
    outcome = MetricOutcome(
        name=resolved.name,
        higher_is_better=metric.higher_is_better,
        sample_ids=[item.sample.id for item, _ in kept],
        stats=stats,
        values=values,
        corpus=corpus,
        ci_low=low,
        ci_high=high,
        confidence=confidence,
        target=resolved.config.target,
        sample_threshold=resolved.config.sample_threshold,
    )
    return outcome, errors


def _drop_non_finite(
    rows: list[Any], items: Sequence[Item], resolved: ResolvedMetric, errors: list[ComponentError]
) -> list[Any]:
    """A sample whose statistics are NaN or infinite would blank the corpus score: it is
    left out and recorded as the plugin's error on that sample."""
    cleaned = []
    for item, row in zip(items, rows):
        if row is not None and not np.all(np.isfinite(row)):
            errors.append(
                ComponentError(
                    plugin=resolved.plugin,
                    hook="Metric.statistics",
                    component=resolved.name,
                    message=f"metric {resolved.name!r} returned non-finite statistics {list(map(float, row))}",
                    sample_id=item.sample.id,
                )
            )
            row = None
        cleaned.append(row)
    return cleaned


def _non_finite_values(values: np.ndarray, items: Sequence[Item], resolved: ResolvedMetric) -> list[ComponentError]:
    return [
        ComponentError(
            plugin=resolved.plugin,
            hook="Metric.sample_scores",
            component=resolved.name,
            message=f"metric {resolved.name!r} returned a non-finite score ({float(value)})",
            sample_id=item.sample.id,
        )
        for item, value in zip(items, values)
        if not math.isfinite(float(value))
    ]


def _corpus_error(resolved: ResolvedMetric, hook: str, message: str, trace: str = "") -> ComponentError:
    return ComponentError(
        plugin=resolved.plugin, hook=hook, component=resolved.name, message=message, traceback=trace
    )


def check_issue(issue: Any, output: str) -> str | None:
    """Why an issue is malformed, or None when it is fine."""
    if not isinstance(issue, Issue):
        return f"returned {type(issue).__name__}, not an Issue"
    if not isinstance(issue.severity, (int, float)) or not math.isfinite(issue.severity):
        return f"issue severity {issue.severity!r} is not a finite number"
    if not 0.0 <= issue.severity <= 1.0:
        return f"issue severity {issue.severity} is outside [0, 1]"
    if not isinstance(issue.message, str) or not issue.message.strip():
        return "issue has no message"
    if (issue.start is None) != (issue.end is None):
        return "issue span needs both start and end (or neither)"
    if issue.start is not None and issue.end is not None:
        if not (isinstance(issue.start, int) and isinstance(issue.end, int)):
            return f"issue span ({issue.start!r}, {issue.end!r}) must be integers"
        if not 0 <= issue.start <= issue.end <= len(output):
            return f"issue span ({issue.start}, {issue.end}) is outside the output (length {len(output)})"
    return None


def run_detector(
    resolved: ResolvedDetector, items: Sequence[Item]
) -> tuple[list[Issue], list[ComponentError]]:
    detector, args = resolved.detector, resolved.args

    def detect(batch: Sequence[Item]) -> list[list[Any]]:
        return [list(found or ()) for found in detector.detect(batch, args)]

    found, errors = _isolated(detect, items, resolved.plugin, "Detector.detect", resolved.name)
    issues = []
    for item, batch_issues in zip(items, found):
        for raw in batch_issues or ():
            problem = check_issue(raw, item.output)
            if problem is not None:
                errors.append(
                    ComponentError(
                        plugin=resolved.plugin,
                        hook="Detector.detect",
                        component=resolved.name,
                        message=f"detector {resolved.name!r} returned a malformed issue: {problem}",
                        sample_id=item.sample.id,
                    )
                )
                continue
            issues.append(
                replace(raw, detector=resolved.name, sample_id=item.sample.id, severity=float(raw.severity))
            )
    return issues, errors


def score_items(
    items: Sequence[Item],
    components: Components,
    *,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
    cluster_by: str | None = None,
) -> ScoringResult:
    """Every metric and detector over every item, and the failing samples."""
    result = ScoringResult()
    for resolved in components.metrics:
        outcome, errors = score_metric(
            resolved, items, confidence=confidence, resamples=resamples, seed=seed, cluster_by=cluster_by
        )
        result.metrics.append(outcome)
        result.errors.extend(errors)
    thresholds = {d.name: d.config.threshold for d in components.detectors}
    for detector in components.detectors:
        issues, errors = run_detector(detector, items)
        result.issues.extend(issues)
        result.errors.extend(errors)
    result.failures = find_failures(result.metrics, result.issues, thresholds)
    return result


def find_failures(
    metrics: Iterable[MetricOutcome], issues: Iterable[Issue], thresholds: dict[str, float]
) -> dict[str, list[str]]:
    """Sample id -> why it fails: worse than a metric's sample threshold, or an issue at or
    above its detector's threshold."""
    reasons: dict[str, list[str]] = {}
    for outcome in metrics:
        for sample_id, value in zip(outcome.sample_ids, outcome.values):
            if outcome.worse_than_threshold(float(value)):
                reasons.setdefault(sample_id, []).append(f"metric:{outcome.name}")
    for issue in issues:
        if issue.severity >= thresholds.get(issue.detector, 1.1):
            tag = f"detector:{issue.detector}"
            if tag not in reasons.setdefault(issue.sample_id, []):
                reasons[issue.sample_id].append(tag)
    return reasons
