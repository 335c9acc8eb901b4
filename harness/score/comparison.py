"""Comparing two runs of one suite, metric by metric: paired tests and flipped samples.

Used by the `compare` report and by the loop's decisions. Metrics with 0/1 outcomes
(exact match) use McNemar's exact test; all others the paired bootstrap over the stored
per-sample sufficient statistics, computed as sacrebleu computes it (so BLEU, chrF,
WER, CER and perplexity are resampled at the corpus level, not as means of sentence
scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from harness.errors import HarnessError
from harness.stats import PairedTest, ScoreFn, describe_clustering
from harness.store.queries import Queries
from harness.store.results import CorpusScore, PairedStats, RunInfo

ALPHA = 0.05


@dataclass(frozen=True)
class Flip:
    """A sample that passes in one run and fails in the other, on one metric."""

    sample_id: str
    metric: str
    value_a: float
    value_b: float
    change: float
    """value_b - value_a, signed so that positive is better."""


@dataclass
class MetricComparison:
    """One metric of two runs: the paired test, and the samples that flipped."""

    metric: str
    higher_is_better: bool
    n: int
    only_a: int
    only_b: int
    test: PairedTest | None = None
    not_tested: str = ""
    """Why there is no test (the metric's plugin is not loaded, no shared samples)."""
    criterion: str = ""
    """What passing a sample means for flips ('>= 50', 'correct'); empty: no flips."""
    fixed: list[Flip] = field(default_factory=list)
    broken: list[Flip] = field(default_factory=list)
    cluster_by: str | None = None
    """The rule samples were grouped by (the suite's cluster_by; None: the rows' group)."""

    @property
    def resampled(self) -> str:
        """What the test resampled: 'samples', or '35 clusters (by group)'."""
        t = self.test
        if t is None or t.clusters is None:
            return "samples"
        return f"{t.clusters} clusters ({describe_clustering(self.cluster_by)})"

    def significant(self, alpha: float = ALPHA, adjusted_p: float | None = None) -> bool:
        """p < alpha, and for the bootstrap also an interval of the difference that
        excludes 0. sacrebleu's paired-bootstrap p-value (reported as is, so that it
        agrees with sacrebleu) rejects a true null about 13% of the time at 0.05 with
        200 samples; requiring the percentile interval to exclude 0 as well brings the
        false-positive rate back to about alpha. McNemar's exact test is calibrated.

        `adjusted_p` replaces the test's own p (a Holm-adjusted `PairedTest.decision_p`
        when one decision looks at several tests)."""
        t = self.test
        p = t.p_value if t is not None and adjusted_p is None else adjusted_p
        if t is None or t.difference == 0 or p is None or p >= alpha:
            return False
        if t.test == "paired bootstrap":
            return t.ci_low > 0 or t.ci_high < 0
        return True

    def outcome(self, alpha: float = ALPHA, adjusted_p: float | None = None) -> str:
        """'better', 'worse', 'no difference', 'not significant' or 'not tested'."""
        t = self.test
        if t is None:
            return "not tested"
        if t.difference == 0 and t.p_value >= 1.0:
            return "no difference"
        if not self.significant(alpha, adjusted_p):
            return "not significant"
        return "better" if (t.difference > 0) == self.higher_is_better else "worse"


def is_binary(paired: PairedStats) -> bool:
    """0/1 outcomes, one per sample, averaged (exact match and the like): McNemar applies."""
    for stats, values in ((paired.stats_a, paired.values_a), (paired.stats_b, paired.values_b)):
        if stats.ndim != 2 or stats.shape[1] != 2 or not len(stats):
            return False
        if not (np.all(stats[:, 1] == 1) and np.all(np.isin(stats[:, 0], (0.0, 1.0)))):
            return False
        if not np.array_equal(stats[:, 0], values):
            return False
    return True


def compare_metric(
    queries: Queries,
    a: RunInfo,
    b: RunInfo,
    score_a: CorpusScore,
    score_b: CorpusScore,
    *,
    resamples: int,
    seed: int,
    cluster_by: str | None = None,
) -> MetricComparison:
    """One metric of two runs. Samples grouped under `cluster_by` (None: the rows'
    group) are resampled as clusters; 0/1 metrics on clustered samples take the cluster
    bootstrap too, since McNemar's test assumes independent pairs."""
    # Imported here: scipy.stats takes a second to import, and loading plugins (which
    # imports this module) must stay quick for every command.
    from harness.stats import mcnemar, n_clusters, paired_bootstrap

    metric = score_a.metric
    paired = queries.paired_stats(a.run_id, b.run_id, metric)
    result = MetricComparison(
        metric=metric,
        higher_is_better=score_a.higher_is_better,
        n=len(paired.sample_ids),
        only_a=paired.only_a,
        only_b=paired.only_b,
        cluster_by=cluster_by,
    )
    if not result.n:
        result.not_tested = "the runs share no scored samples"
        return result
    labels = queries.sample_clusters(a.run_id, paired.sample_ids, cluster_by)
    clusters = labels if n_clusters(labels, result.n) < result.n else None
    binary = is_binary(paired)
    if binary and clusters is not None:
        result.test = paired_bootstrap(
            paired.stats_a, paired.stats_b, _mean, resamples=resamples, seed=seed, clusters=clusters
        )
    elif binary:
        good = 1.0 if score_a.higher_is_better else 0.0
        result.test = mcnemar(paired.values_a == good, paired.values_b == good)
    elif paired.stats_a.shape != paired.stats_b.shape:
        result.not_tested = (
            f"its statistics have different shapes in the two runs ({paired.stats_a.shape[1]} vs "
            f"{paired.stats_b.shape[1]} per sample): the metric changed"
        )
    else:
        if a.metric_config(metric).get("args") != b.metric_config(metric).get("args"):
            result.not_tested = "the runs computed it with different arguments"
        else:
            try:
                score = queries.score_function(b, metric)
            except HarnessError as exc:
                result.not_tested = f"{exc} (load the plugin that provides it with --plugin)"
            else:
                result.test = paired_bootstrap(
                    paired.stats_a, paired.stats_b, score, resamples=resamples, seed=seed, clusters=clusters
                )
    find_flips(result, paired, score_a, score_b, binary)
    return result


def find_flips(
    result: MetricComparison,
    paired: PairedStats,
    score_a: CorpusScore,
    score_b: CorpusScore,
    binary: bool,
) -> None:
    higher = score_a.higher_is_better
    va, vb = paired.values_a, paired.values_b
    if binary:
        good = 1.0 if higher else 0.0
        pass_a, pass_b = va == good, vb == good
        result.criterion = f"= {good:g} (correct)"
    elif score_a.sample_threshold is not None and score_b.sample_threshold is not None:
        ta, tb = score_a.sample_threshold, score_b.sample_threshold
        pass_a = va >= ta if higher else va <= ta
        pass_b = vb >= tb if higher else vb <= tb
        sign = "≥" if higher else "≤"
        result.criterion = f"{sign} {ta:g}" if ta == tb else f"A {sign} {ta:g}, B {sign} {tb:g}"
    else:
        return
    known = np.isfinite(va) & np.isfinite(vb)
    direction = 1.0 if higher else -1.0
    for i in np.flatnonzero(known & (pass_a != pass_b)):
        flip = Flip(
            paired.sample_ids[i],
            result.metric,
            float(va[i]),
            float(vb[i]),
            direction * float(vb[i] - va[i]),
        )
        (result.fixed if pass_b[i] else result.broken).append(flip)
    result.broken.sort(key=lambda f: (f.change, f.sample_id))
    result.fixed.sort(key=lambda f: (-f.change, f.sample_id))


def _mean(totals: np.ndarray) -> np.ndarray:
    """The score of 0/1 statistics (value, 1) summed: the share of ones."""
    return totals[..., 0] / totals[..., 1]


def compare_runs(
    queries: Queries,
    run_a: int,
    run_b: int,
    *,
    resamples: int = 1000,
    seed: int = 12345,
    cluster_by: str | None = None,
) -> list[MetricComparison]:
    """Every metric both runs scored, compared (b against the baseline a). Samples are
    clustered by `cluster_by`, else by the cluster_by the newer run was made with, else
    by the rows' group."""
    a, b = queries.run(run_a), queries.run(run_b)
    rule = cluster_by or b.cluster_by or a.cluster_by
    scores_a = {s.metric: s for s in queries.corpus_scores(a.run_id)}
    scores_b = {s.metric: s for s in queries.corpus_scores(b.run_id)}
    return [
        compare_metric(queries, a, b, scores_a[m], scores_b[m], resamples=resamples, seed=seed, cluster_by=rule)
        for m in scores_a
        if m in scores_b
    ]


def planned_mde(
    queries: Queries,
    run: RunInfo,
    metric: str,
    *,
    alpha: float = ALPHA,
    power: float = 0.8,
    resamples: int = 1000,
    seed: int = 0,
    cluster_by: str | None = None,
) -> float | None:
    """The smallest change of `metric` a paired comparison against this run detects at
    `alpha` with `power` (`harness.stats.single_run_mde`: an upper bound, assuming the
    next run's errors independent of this one's), clusters resampled as the run's suite
    declares. None when the metric's plugin is not loaded or the run has no scores."""
    from harness.stats import single_run_mde

    stats = queries.sample_stats(run.run_id, metric)
    if len(stats.sample_ids) < 2:
        return None
    try:
        score = queries.score_function(run, metric)
    except HarnessError:
        return None
    labels = queries.sample_clusters(run.run_id, stats.sample_ids, cluster_by or run.cluster_by)
    value = single_run_mde(
        stats.stats, score, alpha=alpha, power=power, resamples=resamples, seed=seed, clusters=labels
    )
    return value if np.isfinite(value) else None


def compare_seeds(
    queries: Queries,
    run_a: int,
    runs_b: Sequence[int],
    *,
    resamples: int = 1000,
    seed: int = 12345,
    cluster_by: str | None = None,
) -> list[MetricComparison]:
    """The baseline `run_a` against K runs of checkpoints trained with different seeds.

    Per metric: the paired bootstrap of the baseline against the per-sample statistics
    averaged over the K runs (an average of sums stays a valid input to the metric's
    score), widened by the between-seed variance of the K corpus differences
    (`harness.stats.with_seed_variance`). Fixed and broken samples are those of the
    first seed's run. With one run this is `compare_runs`."""
    from harness.stats import paired_bootstrap, with_seed_variance

    first = compare_runs(queries, run_a, runs_b[0], resamples=resamples, seed=seed, cluster_by=cluster_by)
    if len(runs_b) < 2:
        return first
    a = queries.run(run_a)
    runs = [queries.run(r) for r in runs_b]
    rule = cluster_by or runs[0].cluster_by or a.cluster_by
    for comparison in first:
        if comparison.test is None:
            continue
        metric = comparison.metric
        pairs = [queries.paired_stats(run_a, r.run_id, metric) for r in runs]
        shared = set(pairs[0].sample_ids).intersection(*(p.sample_ids for p in pairs[1:]))
        ids = [i for i in pairs[0].sample_ids if i in shared]
        rows = [{sid: k for k, sid in enumerate(p.sample_ids)} for p in pairs]
        stats_a = pairs[0].stats_a[[rows[0][i] for i in ids]]
        per_seed = [p.stats_b[[r[i] for i in ids]] for p, r in zip(pairs, rows)]
        if any(s.shape != stats_a.shape for s in per_seed):
            continue
        score: ScoreFn
        try:
            score = queries.score_function(runs[0], metric)
        except HarnessError:
            if comparison.test.test != "mcnemar exact":
                continue
            score = _mean
        labels = queries.sample_clusters(run_a, ids, rule)
        clusters = labels if int(labels.max(initial=-1)) + 1 < len(ids) else None
        averaged = paired_bootstrap(
            stats_a, np.mean(per_seed, axis=0), score, resamples=resamples, seed=seed, clusters=clusters
        )
        base = float(score(stats_a.sum(axis=0)))
        differences = [float(score(s.sum(axis=0))) - base for s in per_seed]
        comparison.test = with_seed_variance(averaged, differences)
        comparison.cluster_by = rule
    return first
