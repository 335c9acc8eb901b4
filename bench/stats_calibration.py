"""Calibration of the loop's paired test on clustered samples: false-positive rate under
a clustered null, and power at the minimum detectable effect the harness prints.

    python bench/stats_calibration.py                       # 1,000 comparisons per row
    python bench/stats_calibration.py --comparisons 4000 --seed 1

Each simulated comparison is a suite of 50 clusters of 10 samples (paraphrases of one
question), scored by a mean metric. The paired difference of a sample is
effect + u (shared by its cluster) + e (its own), with a within-cluster correlation of
0.7 (var u = 0.7, var e = 0.3): the design of the simulation the literature quotes
(a naive bootstrap rejects a true null about 43% of the time there). Each comparison
goes through `harness.stats.paired_bootstrap` and is judged significant by
`MetricComparison.significant` (p < 0.05 and a 95% interval that excludes 0), exactly
as the loop decides, once resampling clusters and once resampling samples one by one.

Rows:
  null     effect 0: the share of comparisons called significant is the false-positive rate
  planted  effect = the median MDE the cluster bootstrap printed under the null: the share
           called significant is the power, which should be about 80%

The test tests/test_stats_calibration.py runs `simulate` with the defaults below and
asserts the table.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from harness.score.comparison import MetricComparison
from harness.stats import paired_bootstrap

CLUSTERS = 50
PER_CLUSTER = 10
CORRELATION = 0.7
COMPARISONS = 1000
RESAMPLES = 1000
"""Resamples per comparison of the cluster bootstrap, as the loop draws by default."""
NAIVE_RESAMPLES = 200
"""Resamples per comparison of the sample-by-sample bootstrap: it only has to show that
it is far off (about half its comparisons of a true null come out significant), and
drawing 500 samples 1,000 times per comparison would take most of the test's time."""


def _mean(totals: np.ndarray) -> np.ndarray:
    return totals[..., 0] / totals[..., 1]


@dataclass(frozen=True)
class Row:
    design: str
    resampling: str
    effect: float
    comparisons: int
    significant: float
    """Share of comparisons called significant (false-positive rate, or power)."""
    median_mde: float


def _differences(rng: np.random.Generator, effect: float) -> np.ndarray:
    shared = rng.normal(0.0, np.sqrt(CORRELATION), size=(CLUSTERS, 1))
    own = rng.normal(0.0, np.sqrt(1 - CORRELATION), size=(CLUSTERS, PER_CLUSTER))
    return (effect + shared + own).ravel()


def _rate(effect: float, clustered: bool, comparisons: int, resamples: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(CLUSTERS), PER_CLUSTER) if clustered else None
    n = CLUSTERS * PER_CLUSTER
    ones = np.ones(n)
    base = rng.normal(0.0, 1.0, size=n)
    hits, mdes = 0, []
    for k in range(comparisons):
        after = base + _differences(rng, effect)
        test = paired_bootstrap(
            np.column_stack([base, ones]), np.column_stack([after, ones]), _mean,
            resamples=resamples, seed=seed * 100_003 + k, clusters=labels,
        )
        comparison = MetricComparison("mean", True, n, 0, 0, test=test)
        hits += comparison.significant()
        mdes.append(test.mde)
    return hits / comparisons, float(np.median(mdes))


def simulate(
    comparisons: int = COMPARISONS, resamples: int = RESAMPLES, seed: int = 0,
    naive_resamples: int = NAIVE_RESAMPLES,
) -> list[Row]:
    """The calibration table (fixed seed: the same figures every time)."""
    rate, null_mde = _rate(0.0, True, comparisons, resamples, seed)
    rows = [Row("null", "clusters", 0.0, comparisons, rate, null_mde)]
    rate, mde = _rate(0.0, False, comparisons, naive_resamples, seed)
    rows.append(Row("null", "samples", 0.0, comparisons, rate, mde))
    rate, mde = _rate(null_mde, True, comparisons, resamples, seed + 1)
    rows.append(Row("planted", "clusters", null_mde, comparisons, rate, mde))
    return rows


def format_table(rows: list[Row]) -> str:
    lines = [
        f"{CLUSTERS} clusters x {PER_CLUSTER} samples, within-cluster correlation {CORRELATION}, "
        f"alpha 0.05",
        f"{'design':8} {'resampling':10} {'effect':>7} {'comparisons':>11} {'significant':>11} {'median MDE':>10}",
    ]
    for r in rows:
        lines.append(
            f"{r.design:8} {r.resampling:10} {r.effect:7.3f} {r.comparisons:11d} "
            f"{r.significant:11.1%} {r.median_mde:10.3f}"
        )
    return "\n".join(lines)


def timing(repeats: int = 5) -> str:
    """Median time of one paired bootstrap (mean metric, 500 samples, 1,000 resamples),
    over samples and over 50 clusters of 10."""
    rng = np.random.default_rng(0)
    n = CLUSTERS * PER_CLUSTER
    a = np.column_stack([rng.random(n), np.ones(n)])
    b = np.column_stack([rng.random(n), np.ones(n)])
    labels = np.repeat(np.arange(CLUSTERS), PER_CLUSTER)
    parts = []
    for name, clusters in (("samples", None), (f"{CLUSTERS} clusters", labels)):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            paired_bootstrap(a, b, _mean, resamples=1000, clusters=clusters)
            times.append(time.perf_counter() - start)
        parts.append(f"{name} {np.median(times) * 1000:.1f} ms")
    return f"one paired bootstrap, {n} samples, 1,000 resamples (median of {repeats}): " + ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comparisons", type=int, default=COMPARISONS)
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    parser.add_argument("--naive-resamples", type=int, default=NAIVE_RESAMPLES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    rows = simulate(args.comparisons, args.resamples, args.seed, args.naive_resamples)
    print(format_table(rows))
    print(f"({time.perf_counter() - start:.1f} s)")
    print(timing())


if __name__ == "__main__":
    main()
