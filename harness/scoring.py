"""Scoring a run: metrics and detectors over all its items, and which samples fail.

Pure: takes items, returns values. A component that raises on one sample does not stop
the others: the batch is retried sample by sample, and each failure becomes a
`ComponentError` naming the plugin, the hook and the sample.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np
from pydantic import BaseModel

from harness.components import Detector, Metric, Needs
from harness.registry import Registry
from harness.stats import bootstrap_ci
from harness.suite import DetectorConfig, MetricConfig, Suite, validate_args
from harness.types import Issue, Item

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
    for i, cfg in enumerate(suite.config.detectors):
        reg = registry.get("detector", cfg.name, where=suite.where("detectors", i, "name"))
        args = validate_args(reg.component, cfg.args, suite.where("detectors", i, "args", label=f"detectors[{i}] ({cfg.name}).args"))
        detectors.append(ResolvedDetector(cfg, reg.component, args, reg.plugin.name))
    return Components(metrics, detectors)


@dataclass(frozen=True)
class ComponentError:
    """A plugin failure recorded against a run (and a sample when there was one)."""

    plugin: str
    hook: str
    component: str
    message: str
    sample_id: str | None = None
    traceback: str = ""


@dataclass(frozen=True)
class MetricOutcome:
    name: str
    higher_is_better: bool
    sample_ids: list[str]
    stats: np.ndarray
    values: np.ndarray
    corpus: float
    ci_low: float
    ci_high: float
    confidence: float
    target: float | None
    sample_threshold: float | None

    @property
    def passed(self) -> bool | None:
        if self.target is None or not math.isfinite(self.corpus):
            return None
        return self.corpus >= self.target if self.higher_is_better else self.corpus <= self.target

    def worse_than_threshold(self, value: float) -> bool:
        if self.sample_threshold is None or not math.isfinite(value):
            return False
        if self.higher_is_better:
            return value < self.sample_threshold
        return value > self.sample_threshold


@dataclass
class ScoringResult:
    metrics: list[MetricOutcome] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    failures: dict[str, list[str]] = field(default_factory=dict)
    """Failing sample id -> reasons ('metric:chrf', 'detector:repetition')."""
    errors: list[ComponentError] = field(default_factory=list)


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
) -> tuple[MetricOutcome, list[ComponentError]]:
    metric, args = resolved.metric, resolved.args

    def stats_of(batch: Sequence[Item]) -> np.ndarray:
        stats = np.asarray(metric.statistics(batch, args), dtype=float)
        if stats.ndim != 2 or len(stats) != len(batch):
            raise ValueError(f"statistics must have shape (samples, k), got {stats.shape}")
        return stats

    rows, errors = _isolated(stats_of, items, resolved.plugin, "Metric.statistics", resolved.name)
    kept = [(item, row) for item, row in zip(items, rows) if row is not None]
    width = len(kept[0][1]) if kept else 0
    stats = np.asarray([row for _, row in kept], dtype=float).reshape(len(kept), width)
    score = lambda totals: metric.from_statistics(totals, args)  # noqa: E731
    if len(kept):
        values = np.asarray(metric.sample_scores(stats, args), dtype=float).reshape(len(kept))
        corpus = float(score(stats.sum(axis=0)))
        low, high = bootstrap_ci(stats, score, confidence=confidence, resamples=resamples, seed=seed)
    else:
        values, corpus, low, high = np.zeros(0), float("nan"), float("nan"), float("nan")
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
) -> ScoringResult:
    """Every metric and detector over every item, and the failing samples."""
    result = ScoringResult()
    for resolved in components.metrics:
        outcome, errors = score_metric(
            resolved, items, confidence=confidence, resamples=resamples, seed=seed
        )
        result.metrics.append(outcome)
        result.errors.extend(errors)
    thresholds = {d.name: d.config.threshold for d in components.detectors}
    for resolved in components.detectors:
        issues, errors = run_detector(resolved, items)
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
