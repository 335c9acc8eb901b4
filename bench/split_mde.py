"""How small a change can each shipped suite's held-out split detect?

Evaluates the default model (SmolLM2-135M-Instruct, greedy) on the held-out split of each
task suite and prints, for the suite's main metric, the baseline score and the minimum
detectable effect (MDE): the smallest change a paired test at alpha 0.05 detects with 80%
power, known before any training run is spent.

* chrF, WER, CER (paired bootstrap): `harness.stats.bootstrap_mde` on the baseline run
  compared with itself, which assumes the errors of the two checkpoints independent,
  sqrt(2) x the bootstrap spread of the baseline's corpus score: an upper bound (errors
  of a fine-tune and its base are positively correlated, which shrinks the real figure).
* exact match (McNemar): the smallest share of samples that, all fixed and none broken,
  McNemar's test detects (`harness.stats.mcnemar_mde` at its own fixed point).

    python bench/split_mde.py                          # store under .harness/bench/
    python bench/split_mde.py --store /tmp/mde.duckdb --suite dictionary

The evaluations take a few minutes the first time (about 0.25 s a sample on 2 CPU
cores) and nothing afterwards: generations are cached in the store.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from harness.components.plugin_manager import load_plugins
from harness.score.comparison import compare_runs
from harness.score.evaluate import EvalOptions, evaluate
from harness.stats import mcnemar_mde
from harness.store import Store
from harness.store.queries import Queries
from harness.suite.load import load_suite
from harness.types import ModelSpec

SUITES = ("dictionary", "numbers", "arithmetic")


def mcnemar_fixes_mde(n: int) -> float:
    """The smallest share k/n of fixed samples (none broken) at or above McNemar's MDE
    with k discordant pairs."""
    return next(k / n for k in range(1, n + 1) if k / n >= mcnemar_mde(n, k))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path(".harness/bench/split_mde.duckdb"))
    parser.add_argument("--suite", action="append", choices=SUITES, help="default: every task suite")
    parser.add_argument("--model", default="default")
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()

    plugins = load_plugins()
    rows = []
    args.store.parent.mkdir(parents=True, exist_ok=True)
    with Store.writer(args.store) as store:
        for name in args.suite or SUITES:
            suite = load_suite(name)
            heldout = suite.split(suite.heldout_split)
            run = evaluate(heldout, ModelSpec(args.model), store, plugins, EvalOptions())
            main_metric = suite.config.main
            comparison = next(
                c for c in compare_runs(Queries(store, plugins.registry), run.run_id, run.run_id,
                                        resamples=args.resamples)
                if c.metric == main_metric
            )
            assert comparison.test is not None, comparison.not_tested
            binary = comparison.test.test.startswith("mcnemar")
            mde = mcnemar_fixes_mde(comparison.n) if binary else comparison.test.mde
            rows.append((name, heldout.split_name, comparison.n, main_metric,
                         comparison.test.score_a, mde, "McNemar, fixes only" if binary else "bootstrap bound"))
    print(f"{'suite':<11} {'split':<5} {'n':>4} {'metric':<12} {'baseline':>9} {'MDE':>8}  how")
    for name, split, n, metric, baseline, mde, how in rows:
        shown = "nan" if mde is None or math.isnan(mde) else f"{mde:.3g}"
        print(f"{name:<11} {split:<5} {n:>4} {metric:<12} {baseline:>9.4g} {shown:>8}  {how}")


if __name__ == "__main__":
    main()
