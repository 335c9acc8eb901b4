"""Statistics over per-sample sufficient statistics: confidence intervals and paired tests.

Every metric gives each sample a row of sufficient statistics and a function from their
sum to a score (see `harness.components.Metric`), so one bootstrap serves every metric,
corpus-level ones (BLEU, WER, perplexity) included. The paired bootstrap follows
sacrebleu's (Koehn 2004, as in Moses' script) so that the p-values agree with it; exact
match uses McNemar's exact test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

ScoreFn = Callable[[np.ndarray], np.ndarray]
"""Summed statistics (..., k) -> scores (...)."""

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95


_CHUNK_ELEMENTS = 2_000_000
"""Index draws held in memory at once: bounds memory for large runs (10,000 samples x
1,000 resamples would otherwise be an 80 MB index array per system)."""


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
) -> tuple[float, float]:
    """Percentile bootstrap interval of the corpus score."""
    stats = np.asarray(stats, dtype=float)
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
) -> PairedTest:
    """Paired bootstrap test of b against a (two-sided), as sacrebleu computes it.

    p = (#{ |d*| - mean|d*| > |d| } + 1) / (resamples + 1), where d* are the resampled
    differences and d the observed one; both systems are resampled with the same
    indices, drawn as sacrebleu draws them for the same seed (sacrebleu's default seed
    is 12345, read from SACREBLEU_SEED).

    One deliberate departure: when the two systems have identical statistics on every
    sample, every d* is 0 and sacrebleu's formula gives p = 1 / (resamples + 1), calling
    a system significantly different from itself; here that case gives p = 1."""
    stats_a = np.asarray(stats_a, dtype=float)
    stats_b = np.asarray(stats_b, dtype=float)
    if stats_a.shape != stats_b.shape:
        raise ValueError(f"paired samples differ in shape: {stats_a.shape} vs {stats_b.shape}")
    n = len(stats_a)
    score_a = float(score(stats_a.sum(axis=0)))
    score_b = float(score(stats_b.sum(axis=0)))
    observed = score_b - score_a
    if n < 2:
        return PairedTest("paired bootstrap", score_a, score_b, observed, 1.0, observed, observed, float("nan"), n)
    boot_a_parts, boot_b_parts = [], []
    for counts in resample_counts(n, resamples, seed):
        boot_a_parts.append(np.asarray(score(counts @ stats_a), dtype=float).reshape(len(counts)))
        boot_b_parts.append(np.asarray(score(counts @ stats_b), dtype=float).reshape(len(counts)))
    boot_a = np.concatenate(boot_a_parts)
    diffs = np.concatenate(boot_b_parts) - boot_a
    diffs = diffs[np.isfinite(diffs)]
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
        bootstrap_mde(diffs, boot_a), n,
    )


def bootstrap_mde(
    diffs: np.ndarray, boot_a: np.ndarray, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest difference a two-sided test at `alpha` detects with `power`, from the
    bootstrap spread of the paired difference: (z_(1-alpha/2) + z_power) * sd(d*).

    Identical systems have no spread in their difference; their figure assumes the two
    systems' errors independent, sd = sqrt(2) * sd(score_a*), an upper bound."""
    z = scipy_stats.norm.ppf(1 - alpha / 2) + scipy_stats.norm.ppf(power)
    spread = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else 0.0
    if spread == 0.0:
        finite = boot_a[np.isfinite(boot_a)]
        spread = float(np.sqrt(2) * np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")
    return float(z * spread)


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
    p_value = 1.0 if discordant == 0 else float(scipy_stats.binomtest(fixed, discordant, 0.5).pvalue)
    score_a = float(a.mean()) if n else float("nan")
    score_b = float(b.mean()) if n else float("nan")
    diff = score_b - score_a
    # Wald interval of a paired difference in proportions.
    if n:
        var = (fixed + broken) / n**2 - (fixed - broken) ** 2 / n**3
        half = scipy_stats.norm.ppf(0.975) * np.sqrt(max(var, 0.0))
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
    z = scipy_stats.norm.ppf(1 - alpha / 2) + scipy_stats.norm.ppf(power)
    return float(z * np.sqrt(share / n))
