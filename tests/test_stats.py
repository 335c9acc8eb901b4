"""Statistics: agreement with sacrebleu's paired bootstrap and scipy's exact binomial
test, self-comparison, and coverage of the confidence intervals on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from harness.components.contracts import mean_from_statistics
from harness.plugins.metrics import Bleu, BleuArgs, Chrf, ChrfArgs
from harness.stats import (
    PairedTest,
    bootstrap_ci,
    mcnemar,
    mcnemar_mde,
    paired_bootstrap,
    resample_counts,
    resample_indices,
)
from harness.testing import item

VOCABULARY = (
    "the a cat dog sat ran on under mat table quickly slowly red blue big small house tree "
    "river stone walked jumped over near green old new bright"
)
WORDS = VOCABULARY.split()


def _systems(n: int = 80, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """References, and two systems: B copies more reference words than A."""
    rng = np.random.default_rng(seed)
    refs, sys_a, sys_b = [], [], []
    for _ in range(n):
        ref = list(rng.choice(WORDS, size=int(rng.integers(6, 14))))
        refs.append(" ".join(ref))
        for out, keep in ((sys_a, 0.55), (sys_b, 0.7)):
            out.append(" ".join(w if rng.random() < keep else str(rng.choice(WORDS)) for w in ref))
    return refs, sys_a, sys_b


def _stats(metric, args, hyps: list[str], refs: list[str]) -> np.ndarray:
    return np.asarray(
        metric.statistics(
            [item(h, reference=r, id=str(i)) for i, (h, r) in enumerate(zip(hyps, refs))], args
        )
    )


def _sacrebleu_paired(metric_obj, refs, sys_a, sys_b, monkeypatch, seed: str):
    from sacrebleu.significance import PairedTest

    monkeypatch.setenv("SACREBLEU_SEED", seed)
    test = PairedTest(
        [("baseline", sys_a), ("candidate", sys_b)],
        {"m": metric_obj},
        [refs],
        test_type="bs",
        n_samples=1000,
    )
    _, scores = test()
    (name,) = [k for k in scores if k != "System"]
    return scores[name][0], scores[name][1]


@pytest.mark.parametrize("seed", ["12345", "7"])
@pytest.mark.parametrize("which", ["bleu", "chrf"])
def test_paired_bootstrap_agrees_with_sacrebleu(which: str, seed: str, monkeypatch) -> None:
    from sacrebleu.metrics import BLEU, CHRF

    refs, sys_a, sys_b = _systems()
    if which == "bleu":
        metric, args, reference_metric = Bleu(), BleuArgs(), BLEU()
    else:
        metric, args, reference_metric = Chrf(), ChrfArgs(), CHRF()
    baseline, candidate = _sacrebleu_paired(reference_metric, refs, sys_a, sys_b, monkeypatch, seed)

    ours = paired_bootstrap(
        _stats(metric, args, sys_a, refs),
        _stats(metric, args, sys_b, refs),
        lambda totals: metric.from_statistics(totals, args),
        resamples=1000,
        seed=int(seed),
    )
    assert ours.score_a == pytest.approx(baseline.score, abs=1e-9)
    assert ours.score_b == pytest.approx(candidate.score, abs=1e-9)
    assert ours.p_value == candidate.p_value  # same draws, same formula: the same number
    assert ours.difference > 0


def test_paired_bootstrap_agrees_with_sacrebleu_when_the_difference_is_small(monkeypatch) -> None:
    # A p-value in the middle of the range, where an off-by-one in counting would show.
    from sacrebleu.metrics import BLEU

    refs, sys_a, better = _systems(n=60, seed=3)
    sys_b = [b if i % 6 == 0 else a for i, (a, b) in enumerate(zip(sys_a, better))]
    _, candidate = _sacrebleu_paired(BLEU(), refs, sys_a, sys_b, monkeypatch, "12345")
    metric, args = Bleu(), BleuArgs()
    ours = paired_bootstrap(
        _stats(metric, args, sys_a, refs),
        _stats(metric, args, sys_b, refs),
        lambda t: metric.from_statistics(t, args),
        seed=12345,
    )
    assert ours.p_value == candidate.p_value
    assert 0.01 < ours.p_value < 1.0


def test_chunked_resampling_draws_what_sacrebleu_draws() -> None:
    # sacrebleu draws rng.choice(n, size=(resamples, n)) at once; we draw in row chunks.
    n, resamples, seed = 37, 250, 12345
    indices = resample_indices(n, resamples, seed)
    expected = np.stack([np.bincount(row, minlength=n) for row in indices])
    import harness.stats as stats_module

    original = stats_module._CHUNK_ELEMENTS
    stats_module._CHUNK_ELEMENTS = n * 7  # force chunks of 7 rows
    try:
        counts = np.concatenate(list(resample_counts(n, resamples, seed)))
    finally:
        stats_module._CHUNK_ELEMENTS = original
    assert np.array_equal(counts, expected)


def test_a_system_compared_with_itself_shows_no_difference() -> None:
    refs, sys_a, _ = _systems(n=40)
    metric, args = Bleu(), BleuArgs()
    stats = _stats(metric, args, sys_a, refs)
    test = paired_bootstrap(stats, stats.copy(), lambda t: metric.from_statistics(t, args))
    assert test.difference == 0 and test.p_value == 1.0 and not test.significant
    assert (test.ci_low, test.ci_high) == (0.0, 0.0)
    assert np.isfinite(test.mde) and test.mde > 0  # still says what this sample size could detect
    correct = np.random.default_rng(1).random(50) < 0.6
    same = mcnemar(correct, correct)
    assert same.p_value == 1.0 and same.difference == 0


@pytest.mark.parametrize("fixed, broken", [(6, 0), (9, 3), (20, 12), (30, 50), (4, 4)])
def test_mcnemar_is_scipys_exact_binomial_test(fixed: int, broken: int) -> None:
    both_right, both_wrong = 40, 25
    a = np.array([True] * both_right + [False] * both_wrong + [False] * fixed + [True] * broken)
    b = np.array([True] * both_right + [False] * both_wrong + [True] * fixed + [False] * broken)
    test = mcnemar(a, b)
    assert test.p_value == pytest.approx(
        scipy_stats.binomtest(fixed, fixed + broken, 0.5).pvalue, rel=1e-12
    )
    assert test.difference == pytest.approx((fixed - broken) / len(a))
    if fixed + broken >= 40:
        # The chi-square form with continuity correction approximates the exact test.
        chi2 = (abs(fixed - broken) - 1) ** 2 / (fixed + broken)
        assert test.p_value == pytest.approx(scipy_stats.chi2.sf(chi2, 1), abs=0.01)


def test_mcnemar_mde_shrinks_with_more_samples() -> None:
    assert mcnemar_mde(100, 20) > mcnemar_mde(400, 80) > mcnemar_mde(1600, 320)
    assert mcnemar_mde(400, 80) == pytest.approx(mcnemar_mde(100, 20) / 2)


def _coverage(draw, truth: float, score, trials: int = 200, n: int = 120) -> float:
    rng = np.random.default_rng(2024)
    hits = 0
    for t in range(trials):
        low, high = bootstrap_ci(draw(rng, n), score, resamples=400, seed=t)
        hits += low <= truth <= high
    return hits / trials


def test_intervals_cover_the_truth_for_a_mean() -> None:
    # Accuracy-like: Bernoulli(0.3) per sample, (value, count) statistics.
    def draw(rng, n):
        return np.column_stack([rng.random(n) < 0.3, np.ones(n)]).astype(float)

    coverage = _coverage(draw, 0.3, mean_from_statistics)
    assert 0.89 <= coverage <= 0.99


def test_intervals_cover_the_truth_for_a_ratio_of_sums() -> None:
    # WER-like: errors over reference words, summed before dividing (a corpus metric).
    def draw(rng, n):
        words = rng.integers(4, 20, size=n).astype(float)
        errors = rng.binomial(words.astype(int), 0.2).astype(float)
        return np.column_stack([errors, words])

    def ratio(totals):
        return totals[..., 0] / totals[..., 1]

    coverage = _coverage(draw, 0.2, ratio)
    assert 0.89 <= coverage <= 0.99


def test_paired_bootstrap_finds_a_real_difference_and_rarely_a_false_one() -> None:
    rng = np.random.default_rng(5)
    n = 200
    a = rng.random(n) < 0.5
    better = a | (rng.random(n) < 0.25)
    stats = lambda x: np.column_stack([x, np.ones(n)]).astype(float)
    assert paired_bootstrap(stats(a), stats(better), mean_from_statistics).p_value < 0.01

    # Under the null hypothesis the Moses/sacrebleu formula (|d*| - mean|d*| > |d|) acts
    # like a one-sided test: about 2.5 times the nominal rate of false positives (12.8% at
    # p < 0.05 over 600 null trials at n = 200). Matching sacrebleu keeps that; this bounds it.
    false_positives = 0
    for trial in range(60):
        x = rng.random(n) < 0.5
        y = rng.random(n) < 0.5  # same distribution
        false_positives += paired_bootstrap(
            stats(x), stats(y), mean_from_statistics, seed=trial
        ).significant
    assert false_positives / 60 <= 0.2


def test_minimum_detectable_effect_shrinks_like_one_over_root_n() -> None:
    rng = np.random.default_rng(9)

    def mde(n: int) -> float:
        a = rng.random(n) < 0.5
        b = np.where(rng.random(n) < 0.3, ~a, a)
        s = lambda x: np.column_stack([x, np.ones(n)]).astype(float)
        return paired_bootstrap(s(a), s(b), mean_from_statistics).mde

    small, large = mde(200), mde(3200)
    assert large == pytest.approx(small / 4, rel=0.25)


def test_cluster_labels_number_groups_in_order_and_keep_ungrouped_samples_alone() -> None:
    from harness.stats import cluster_labels

    labels = cluster_labels(["q1", None, "q2", "q1", None, "q2"])
    assert labels.tolist() == [0, 1, 2, 0, 3, 2]


def test_singleton_clusters_draw_exactly_as_the_plain_bootstrap() -> None:
    rng = np.random.default_rng(3)
    a = np.column_stack([rng.random(40), np.ones(40)])
    b = np.column_stack([rng.random(40) + 0.1, np.ones(40)])
    plain = paired_bootstrap(a, b, mean_from_statistics, seed=5)
    alone = paired_bootstrap(a, b, mean_from_statistics, seed=5, clusters=np.arange(40))
    assert (plain.ci_low, plain.ci_high, plain.p_value) == (alone.ci_low, alone.ci_high, alone.p_value)
    assert plain.clusters is None and plain.resampled == "samples"
    assert bootstrap_ci(a, mean_from_statistics) == bootstrap_ci(a, mean_from_statistics, clusters=np.arange(40))


def test_clustered_intervals_are_wider_for_correlated_samples() -> None:
    """Ten copies of each of 20 items: resampling samples thinks there are 200 independent
    ones, resampling the 20 clusters knows there are 20."""
    rng = np.random.default_rng(0)
    values = np.repeat(rng.random(20), 10)
    stats = np.column_stack([values, np.ones(200)])
    labels = np.repeat(np.arange(20), 10)
    low, high = bootstrap_ci(stats, mean_from_statistics)
    clow, chigh = bootstrap_ci(stats, mean_from_statistics, clusters=labels)
    assert (chigh - clow) > 2.5 * (high - low)
    shifted = np.column_stack([values + rng.normal(0, 0.05, 20).repeat(10), np.ones(200)])
    test = paired_bootstrap(stats, shifted, mean_from_statistics, clusters=labels)
    assert test.clusters == 20 and test.resampled == "20 clusters" and test.n == 200


def test_holm_matches_the_step_down_definition() -> None:
    from harness.stats import holm

    # Holm (1979): sorted p (0.01, 0.02, 0.04) times (3, 2, 1), running maximum.
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_single_run_mde_is_the_independent_pairs_bound() -> None:
    from harness.stats import single_run_mde

    rng = np.random.default_rng(1)
    values = rng.random(400)
    stats = np.column_stack([values, np.ones(400)])
    se = values.std(ddof=1) / np.sqrt(400)
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert single_run_mde(stats, mean_from_statistics) == pytest.approx(z * np.sqrt(2) * se, rel=0.1)


def test_seed_variance_widens_the_interval_and_weakens_the_test() -> None:
    from harness.stats import with_seed_variance

    test = PairedTest("paired bootstrap", 10.0, 12.0, 2.0, 0.001, 1.0, 3.0, 1.4, 100)
    agreeing = with_seed_variance(test, [2.0, 2.0, 2.0])
    assert (agreeing.ci_low, agreeing.ci_high) == pytest.approx((1.0, 3.0), abs=1e-6)
    assert agreeing.seeds == 3 and agreeing.p_value < 0.05
    spread = with_seed_variance(test, [0.0, 4.0, 2.0])
    # Total variance: ((3 - 1) / 3.92)^2 + var(0, 4, 2) / 3 = 0.26 + 1.33.
    se = np.sqrt((2 / (2 * scipy_stats.norm.ppf(0.975))) ** 2 + 4.0 / 3)
    assert spread.ci_high - spread.ci_low == pytest.approx(2 * scipy_stats.norm.ppf(0.975) * se)
    assert spread.ci_low < 0 and spread.decision_p > 0.05
    assert with_seed_variance(test, [2.0]) is test
