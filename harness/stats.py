"""Statistics over per-sample sufficient statistics: confidence intervals and paired tests.

Every metric gives each sample a row of sufficient statistics and a function from their
sum to a score (see `harness.components.contracts.Metric`), so one bootstrap serves every metric,
corpus-level ones (BLEU, WER, perplexity) included. The paired bootstrap follows
sacrebleu's (Koehn 2004, as in Moses' script) so that the p-values agree with it; exact
match uses McNemar's exact test.

Samples that are not independent (paraphrases of one question, items sharing a template)
are resampled as clusters: each cluster's rows are summed into one row and the bootstrap
draws clusters (Davison & Hinkley 1997, sec. 3.8; Miller 2024, "Adding Error Bars to
Evals"). When every sample is its own cluster this is the plain bootstrap, draw for draw.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

_NORMAL = NormalDist()
"""The standard normal, from the standard library: scipy.stats costs about 2 s to import,
which every command would pay for a quantile."""


def _z(q: float) -> float:
    """The standard normal's q-quantile."""
    return _NORMAL.inv_cdf(q)


def _binomial_p(successes: int, trials: int) -> float:
    """Two-sided exact binomial test against p = 0.5 (McNemar's exact test)."""
    from scipy import stats as scipy_stats

    return float(scipy_stats.binomtest(successes, trials, 0.5).pvalue)


ScoreFn = Callable[[np.ndarray], np.ndarray]
"""Summed statistics (..., k) -> scores (...)."""

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


_CHUNK_ELEMENTS = 2_000_000
"""Index draws held in memory at once: bounds memory for large runs (10,000 samples x
1,000 resamples would otherwise be an 80 MB index array per system)."""


def cluster_labels(keys: Sequence[Hashable | None]) -> np.ndarray:
    """Integer cluster labels (0..G-1, in order of first appearance) for per-sample keys;
    a sample whose key is None is a cluster of its own."""
    labels = np.empty(len(keys), dtype=np.int64)
    seen: dict[Hashable, int] = {}
    for i, key in enumerate(keys):
        if key is None:
            labels[i] = len(seen)
            seen[("\0singleton", i)] = labels[i]
        else:
            labels[i] = seen.setdefault(key, len(seen))
    return labels


def sample_cluster_key(
    cluster_by: str | None, group: str | None, tags: Sequence[str], metadata: Mapping[str, Any]
) -> Hashable | None:
    """The cluster a sample belongs to under a suite's `cluster_by` (None: its own).

    Unset means `group`: paraphrase groups are the common reason samples are not
    independent, and a suite without groups then resamples samples as before."""
    rule = cluster_by or "group"
    if rule == "none":
        return None
    if rule == "group":
        return group
    if rule.startswith("tag:"):
        prefix = rule[4:]
        return next((t for t in tags if t.startswith(prefix)), None)
    if rule.startswith("metadata."):
        value = metadata.get(rule[len("metadata."):]) if metadata else None
        return None if value is None else json.dumps(value, sort_keys=True)
    raise ValueError(f"cluster_by {cluster_by!r} is none of group, none, tag:PREFIX, metadata.FIELD")


def describe_clustering(cluster_by: str | None) -> str:
    """How samples were grouped, in words: 'by group', 'by tag:tmpl-', ..."""
    return "by " + (cluster_by or "group")


def cluster_totals(stats: np.ndarray, clusters: np.ndarray | None) -> np.ndarray:
    """Per-cluster sums of the rows of `stats` (G, k), clusters in label order; `stats`
    itself when there are no clusters or every sample is alone in its cluster."""
    stats = np.asarray(stats, dtype=float)
    if clusters is None:
        return stats
    clusters = np.asarray(clusters, dtype=np.int64)
    if clusters.shape != (len(stats),):
        raise ValueError(f"{len(clusters)} cluster labels for {len(stats)} samples")
    groups = int(clusters.max()) + 1 if len(clusters) else 0
    if groups == len(stats) and np.array_equal(clusters, np.arange(groups)):
        return stats
    totals = np.zeros((groups, stats.shape[1]))
    np.add.at(totals, clusters, stats)
    return totals


def n_clusters(clusters: np.ndarray | None, n: int) -> int:
    return n if clusters is None or not len(clusters) else int(np.max(clusters)) + 1


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap indices (resamples, n), drawn as sacrebleu draws them for the same seed."""
    rng = np.random.default_rng(seed)
    return rng.choice(n, size=(resamples, n), replace=True)


def resample_counts(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """How often each sample is drawn in each resample, as chunks of shape (rows, n).

    The draws are exactly those of `resample_indices` (numpy's generator yields the
    same stream whether drawn at once or in row chunks), so results agree with
    sacrebleu's for the same seed, while memory stays bounded."""
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_ELEMENTS // max(n, 1))
    done = 0
    while done < resamples:
        take = min(rows, resamples - done)
        indices = rng.choice(n, size=(take, n), replace=True)
        flat = (np.arange(take)[:, None] * n + indices).ravel()
        yield np.bincount(flat, minlength=take * n).reshape(take, n).astype(float)
        done += take


def resampled_totals(stats: np.ndarray, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Summed statistics (rows, k) of each bootstrap resample, chunk by chunk."""
    stats = np.asarray(stats, dtype=float)
    for counts in resample_counts(len(stats), resamples, seed):
        yield counts @ stats


def bootstrap_scores(stats: np.ndarray, score: ScoreFn, *, resamples: int, seed: int) -> np.ndarray:
    """The score of each of `resamples` bootstrap resamples (the draws of `resample_indices`)."""
    parts = [
        np.asarray(score(totals), dtype=float).reshape(len(totals))
        for totals in resampled_totals(stats, resamples, seed)
    ]
    return np.concatenate(parts) if parts else np.zeros(0)


def bootstrap_ci(
    stats: np.ndarray,
    score: ScoreFn,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    clusters: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the corpus score; with `clusters` (a label per
    sample, see `cluster_labels`) whole clusters are resampled."""
    stats = cluster_totals(stats, clusters)
    if len(stats) < 2:
        value = float(score(stats.sum(axis=0))) if len(stats) else float("nan")
        return value, value
    scores = bootstrap_scores(stats, score, resamples=resamples, seed=seed)
    scores = scores[np.isfinite(scores)]
    if not len(scores):
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(scores, [alpha, 1 - alpha])
    return float(low), float(high)


@dataclass(frozen=True, slots=True)
class PairedTest:
    """The outcome of comparing two systems on the same samples."""

    test: str
    """'paired bootstrap' or 'mcnemar exact'."""
    score_a: float
    score_b: float
    difference: float
    """score_b - score_a."""
    p_value: float
    ci_low: float
    """Bootstrap interval of the difference (b - a)."""
    ci_high: float
    mde: float
    """Minimum detectable effect at this sample size (alpha 0.05, power 0.8)."""
    n: int
    clusters: int | None = None
    """How many clusters were resampled; None: samples were resampled one by one."""
    p_interval: float | None = None
    """The bootstrap's percentile p-value: twice the share of resampled differences on
    the far side of 0 (p < alpha exactly when the 1 - alpha interval excludes 0)."""
    seeds: int | None = None
    """Training seeds averaged (see `with_seed_variance`); None: one checkpoint."""

    @property
    def decision_p(self) -> float:
        """The p-value decisions use (and Holm adjusts): for the bootstrap the larger of
        sacrebleu's p and the percentile p, so that a decision needs both, as
        `MetricComparison.significant` always has; McNemar's exact p otherwise."""
        if self.p_interval is None:
            return self.p_value
        return max(self.p_value, self.p_interval)

    @property
    def resampled(self) -> str:
        """'samples', or 'G clusters' when samples were resampled in clusters."""
        return "samples" if self.clusters is None else f"{self.clusters} clusters"

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def paired_bootstrap(
    stats_a: np.ndarray,
    stats_b: np.ndarray,
    score: ScoreFn,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 12345,
    confidence: float = DEFAULT_CONFIDENCE,
    clusters: np.ndarray | None = None,
) -> PairedTest:
    """Paired bootstrap test of b against a (two-sided), as sacrebleu computes it.

    p = (#{ |d*| - mean|d*| > |d| } + 1) / (resamples + 1), where d* are the resampled
    differences and d the observed one; both systems are resampled with the same
    indices, drawn as sacrebleu draws them for the same seed (sacrebleu's default seed
    is 12345, read from SACREBLEU_SEED).

    One deliberate departure: when the two systems have identical statistics on every
    sample, every d* is 0 and sacrebleu's formula gives p = 1 / (resamples + 1), calling
    a system significantly different from itself; here that case gives p = 1.

    With `clusters` (a label per sample) both systems' rows are summed per cluster and
    whole clusters are drawn: the test for samples that are not independent."""
    stats_a = np.asarray(stats_a, dtype=float)
    stats_b = np.asarray(stats_b, dtype=float)
    if stats_a.shape != stats_b.shape:
        raise ValueError(f"paired samples differ in shape: {stats_a.shape} vs {stats_b.shape}")
    n = len(stats_a)
    groups = n_clusters(clusters, n)
    clustered = groups if groups < n else None
    stats_a, stats_b = cluster_totals(stats_a, clusters), cluster_totals(stats_b, clusters)
    score_a = float(score(stats_a.sum(axis=0)))
    score_b = float(score(stats_b.sum(axis=0)))
    observed = score_b - score_a
    if groups < 2:
        return PairedTest(
            "paired bootstrap", score_a, score_b, observed, 1.0, observed, observed, float("nan"), n, clustered
        )
    boot_a_parts, boot_b_parts = [], []
    for counts in resample_counts(groups, resamples, seed):
        boot_a_parts.append(np.asarray(score(counts @ stats_a), dtype=float).reshape(len(counts)))
        boot_b_parts.append(np.asarray(score(counts @ stats_b), dtype=float).reshape(len(counts)))
    boot_a = np.concatenate(boot_a_parts)
    diffs = np.concatenate(boot_b_parts) - boot_a
    diffs = diffs[np.isfinite(diffs)]
    if clustered is not None and len(diffs):
        diffs = _small_sample_corrected(diffs, groups)
    if np.array_equal(stats_a, stats_b) or not len(diffs):
        p_value = 1.0
    else:
        sample_diffs = np.abs(diffs)
        centred = sample_diffs - sample_diffs.mean()
        p_value = float((np.sum(centred > abs(observed)) + 1) / (len(diffs) + 1))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(diffs, [alpha, 1 - alpha]) if len(diffs) else (float("nan"),) * 2
    return PairedTest(
        "paired bootstrap", score_a, score_b, observed, p_value, float(low), float(high),
        bootstrap_mde(diffs, boot_a), n, clustered, percentile_p(diffs) if p_value < 1.0 else 1.0,
    )


def percentile_p(diffs: np.ndarray) -> float:
    """Two-sided percentile-bootstrap p-value of 'no difference'."""
    if not len(diffs):
        return 1.0
    below = float(np.mean(diffs <= 0))
    above = float(np.mean(diffs >= 0))
    return min(1.0, 2 * min(below, above))


def _small_sample_corrected(draws: np.ndarray, groups: int) -> np.ndarray:
    """Bootstrap draws spread by sqrt(G / (G - 1)) about their mean. Resampling G clusters
    underestimates the variance by the factor (G - 1) / G (the bootstrap's plug-in
    variance), which matters with few clusters; the same correction as the CR1 clustered
    standard error (Cameron & Miller 2015). At 50 clusters it is small: false positives
    at alpha 0.05 averaged 5.7% corrected and 6.0% uncorrected over four simulation
    seeds (bench/stats_calibration.py, docs/reports.md)."""
    centre = draws.mean()
    return centre + (draws - centre) * np.sqrt(groups / (groups - 1))


def bootstrap_mde(
    diffs: np.ndarray, boot_a: np.ndarray, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest difference a two-sided test at `alpha` detects with `power`, from the
    bootstrap spread of the paired difference: (z_(1-alpha/2) + z_power) * sd(d*).

    Identical systems have no spread in their difference; their figure assumes the two
    systems' errors independent, sd = sqrt(2) * sd(score_a*), an upper bound."""
    z = _z(1 - alpha / 2) + _z(power)
    spread = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
    if spread == 0.0:
        finite = boot_a[np.isfinite(boot_a)]
        spread = float(np.sqrt(2) * np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")
    return float(z * spread)


def single_run_mde(
    stats: np.ndarray,
    score: ScoreFn,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    clusters: np.ndarray | None = None,
) -> float:
    """The MDE a paired comparison against this run would have, known before the second
    run exists: (z_(1-alpha/2) + z_power) * sqrt(2) * sd(score*), which assumes the two
    runs' per-sample errors independent. Real pairs are positively correlated (the same
    hard samples stay hard), so the paired MDE is usually smaller: this is an upper
    bound, the figure to plan with."""
    stats = cluster_totals(stats, clusters)
    if len(stats) < 2:
        return float("nan")
    scores = bootstrap_scores(stats, score, resamples=resamples, seed=seed)
    scores = scores[np.isfinite(scores)]
    if len(scores) < 2:
        return float("nan")
    z = _z(1 - alpha / 2) + _z(power)
    return float(z * np.sqrt(2) * np.std(scores, ddof=1))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, Holm 1979): controls the chance of any false
    rejection among the tests at alpha, with no assumption about their dependence."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if not m:
        return []
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return [float(v) for v in out]


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> PairedTest:
    """McNemar's exact test for paired binary outcomes (exact match).

    Only discordant pairs carry information: b01 (a right, b wrong) and b10 (a wrong,
    b right); under the null hypothesis each is Binomial(b01 + b10, 1/2)."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    n = len(a)
    broken = int(np.sum(a & ~b))
    fixed = int(np.sum(~a & b))
    discordant = broken + fixed
    p_value = 1.0 if discordant == 0 else _binomial_p(fixed, discordant)
    score_a = float(a.mean()) if n else float("nan")
    score_b = float(b.mean()) if n else float("nan")
    diff = score_b - score_a
    # Wald interval of a paired difference in proportions.
    if n:
        var = (fixed + broken) / n**2 - (fixed - broken) ** 2 / n**3
        half = _z(0.975) * np.sqrt(max(var, 0.0))
    else:
        half = float("nan")
    return PairedTest(
        "mcnemar exact", score_a, score_b, diff, p_value, diff - half, diff + half, mcnemar_mde(n, discordant), n
    )


def mcnemar_mde(n: int, discordant: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest difference in accuracy McNemar's test would detect, given the observed
    share of discordant pairs (at least one pair assumed, so the figure stays finite)."""
    if n == 0:
        return float("nan")
    share = max(discordant, 1) / n
    z = _z(1 - alpha / 2) + _z(power)
    return float(z * np.sqrt(share / n))


def with_seed_variance(test: PairedTest, seed_differences: Sequence[float], confidence: float = DEFAULT_CONFIDENCE) -> PairedTest:
    """A paired test of seed-averaged statistics, widened by the spread between seeds.

    `test` compares the baseline with the per-sample statistics averaged over K
    checkpoints trained with different seeds; `seed_differences` are the K checkpoints'
    own corpus differences. The variance of the effect is the bootstrap's (samples) plus
    s^2 / K (seeds, s the between-seed standard deviation): a normal interval and p-value
    on that total. The seed term counts some per-sample noise twice (the bootstrap of the
    averages already sees part of it), so the test errs on the side of caution."""
    k = len(seed_differences)
    if k < 2:
        return test
    z = _z(1 - (1 - confidence) / 2)
    se_samples = (test.ci_high - test.ci_low) / (2 * z)
    between = float(np.var(np.asarray(seed_differences, dtype=float), ddof=1))
    se = float(np.sqrt(se_samples**2 + between / k))
    d = test.difference
    if se == 0:  # every resample and every seed agree exactly
        p = 1.0 if d == 0 else 0.0
    else:
        p = float(2 * _NORMAL.cdf(-abs(d) / se))
    power_z = _z(1 - 0.05 / 2) + _z(0.8)
    return PairedTest(
        test.test, test.score_a, test.score_b, d, max(p, test.p_value), d - z * se, d + z * se,
        float(power_z * se), test.n, test.clusters, p, k,
    )
