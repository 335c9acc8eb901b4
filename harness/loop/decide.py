"""How the loop decides whether an iteration's checkpoint is kept.

Decisions compare the new checkpoint with the last accepted one using paired tests on
the held-out split (clusters of grouped samples resampled together, Holm across the
tests; see `decide`):
  rollback      the suite's main metric got significantly worse, or a guard metric is not
                shown non-inferior within its margin (forgetting not ruled out)
  target_met    the suite's main metric reached the suite's target
  no_gain       no significant improvement, and a gain of the margin is ruled out: stop
  underpowered  no significant improvement, but the suite is too small to rule out a gain
                of the margin: stop, keep the last (a bigger suite could tell)
  continue      significantly better: keep it and go on (until the iterations run out)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.loop.config import LoopConfig
from harness.score.comparison import MetricComparison, compare_runs, compare_seeds
from harness.store import Store
from harness.store.loops import cluster_progress, issue_counts, iteration_row
from harness.store.queries import Queries
from harness.suite.config import resolve_margin
from harness.suite.load import Suite

DECISION_RULE = 2
"""The version of the rule `decide` applies, stored with every decision.

1 (decisions stored without a number): paired tests resampling samples; rollback when
  the main metric or a guard metric got significantly worse; no multiplicity correction.
2: tests resample clusters of grouped samples; Holm across the tests one decision looks
  at; a guard passes only when non-inferior within its margin; a no_gain that cannot rule
  out a gain of the margin is called underpowered."""

STOPPING = ("rollback", "no_gain", "underpowered", "target_met")


@dataclass
class GuardCheck:
    """A guard metric judged by non-inferiority: its change must be shown above -margin."""

    comparison: MetricComparison
    margin: float
    """In the metric's units (see `harness.suite.config.resolve_margin`)."""


@dataclass
class Decision:
    decision: str
    reason: str
    record: dict[str, Any]
    """What the decision rested on (stored with it): rule, alpha, Holm's adjusted
    p-values, each guard's margin, interval and verdict, the main metric's margin."""


def _better(c: MetricComparison) -> tuple[float, float, float]:
    """The change and its interval, signed so that positive is better."""
    t = c.test
    assert t is not None
    if c.higher_is_better:
        return t.difference, t.ci_low, t.ci_high
    return -t.difference, -t.ci_high, -t.ci_low


def decide(
    main: MetricComparison,
    guard: Sequence[GuardCheck],
    *,
    suite: str,
    guard_suite: str | None = None,
    target: float | None,
    alpha: float = 0.05,
    main_margin: float | None = None,
) -> Decision:
    """The decision after comparing a new checkpoint with the last accepted one (rule 2).

    1. Holm: the main metric's test and every guard metric's are one family; the main
       metric improved (or got worse) only when its Holm-adjusted p < alpha and its
       interval excludes 0 (`MetricComparison.significant`).
    2. rollback when the main metric got worse, or when a guard metric's interval of the
       change (95%, in its better direction) reaches below -margin: forgetting within the
       margin is not ruled out. Requiring every guard at once is an intersection-union
       test (Berger 1982): it keeps its level without a correction.
    3. target_met when the main metric reaches the target; continue when it improved.
    4. Otherwise no_gain when the interval rules out a gain of `main_margin`, and
       underpowered when it does not (the suite is too small to tell)."""
    from harness.stats import holm

    record: dict[str, Any] = {"rule": DECISION_RULE, "alpha": alpha, "family": [], "guards": []}
    tested = [(suite, main)] + [(guard_suite or "guard", g.comparison) for g in guard if g.comparison.test]
    family = [(name, c) for name, c in tested if c.test is not None]
    adjusted = holm([c.test.decision_p for _, c in family])  # type: ignore[union-attr]
    holm_p = {id(c): p for (_, c), p in zip(family, adjusted)}
    for (name, c), p in zip(family, adjusted):
        record["family"].append(
            {"suite": name, "metric": c.metric, "p": c.test.decision_p, "p_holm": p}  # type: ignore[union-attr]
        )
    test = main.test
    if test is None:
        return Decision("no_gain", f"{suite} {main.metric} could not be tested: {main.not_tested}", record)
    p_main = holm_p[id(main)]
    change = (
        f"{main.metric} {test.score_a:.4g} -> {test.score_b:.4g} "
        f"(change {test.difference:+.3g}, 95% CI [{test.ci_low:+.3g}, {test.ci_high:+.3g}], "
        f"p={test.p_value:.3g}, Holm p={p_main:.3g}, over {main.resampled})"
    )
    outcome = main.outcome(alpha, p_main)
    record["main"] = {"metric": main.metric, "outcome": outcome, "margin": main_margin, "mde": test.mde}
    if outcome == "worse":
        return Decision("rollback", f"{suite} got significantly worse: {change}", record)
    failed = None
    for g in guard:
        entry = _guard_entry(g, holm_p, alpha)
        record["guards"].append(entry)
        if entry["verdict"] == "inferior" and failed is None:
            failed = (g, entry)
    if failed is not None:
        g, entry = failed
        t = g.comparison.test
        assert t is not None
        low = entry["ci_better"][0]
        return Decision("rollback", (
            f"the guard suite {guard_suite} may have got worse (forgetting not ruled out): {g.comparison.metric} "
            f"{t.score_a:.4g} -> {t.score_b:.4g}, change {t.difference:+.3g}, 95% CI "
            f"[{t.ci_low:+.3g}, {t.ci_high:+.3g}]: a loss of {-low:.3g} is possible, beyond the margin {g.margin:.3g}"
        ), record)
    if target is not None:
        reached = test.score_b >= target if main.higher_is_better else test.score_b <= target
        if reached:
            return Decision("target_met", f"{change} reaches the target {target:g}", record)
    if outcome == "better":
        return Decision("continue", f"{suite} improved: {change}", record)
    best = _better(main)[2]
    if main_margin is not None and best >= main_margin:
        return Decision("underpowered", (
            f"no significant gain on {suite}, but a gain of {best:.3g} is not ruled out, more than the margin "
            f"{main_margin:.3g} (MDE {test.mde:.3g}): the suite is too small to tell; {change}"
        ), record)
    return Decision("no_gain", f"no significant gain on {suite}: {change}", record)


def _guard_entry(g: GuardCheck, holm_p: Mapping[int, float], alpha: float) -> dict[str, Any]:
    c, t = g.comparison, g.comparison.test
    entry: dict[str, Any] = {"metric": c.metric, "margin": g.margin}
    if t is None:
        return {**entry, "verdict": "not tested", "why": c.not_tested}
    change, low, high = _better(c)
    return {
        **entry,
        "change": t.difference,
        "ci": [t.ci_low, t.ci_high],
        "ci_better": [low, high],
        "p_holm": holm_p.get(id(c)),
        "significantly_worse": c.outcome(alpha, holm_p.get(id(c))) == "worse",
        "verdict": "non-inferior" if low > -g.margin else "inferior",
        "resampled": c.resampled,
    }


def _observed_mde(observed: Mapping[str, Any] | None, section: str, metric: str) -> float | None:
    """The paired MDE a stored comparison measured for `metric` in `section` ("metrics"
    for the suite, "guard"), or None."""
    if not observed:
        return None
    for record in (observed.get("comparison") or {}).get(section) or []:
        if record.get("metric") == metric and record.get("mde") is not None:
            return float(record["mde"])
    return None


def _comparison_record(c: MetricComparison) -> dict[str, Any]:
    t = c.test
    return {
        "metric": c.metric,
        "higher_is_better": c.higher_is_better,
        "n": c.n,
        "test": t.test if t else None,
        "before": t.score_a if t else None,
        "after": t.score_b if t else None,
        "difference": t.difference if t else None,
        "p_value": t.p_value if t else None,
        "ci": [t.ci_low, t.ci_high] if t else None,
        "mde": t.mde if t else None,
        "seeds": t.seeds if t else None,
        "resampled": c.resampled if t else None,
        "clusters": t.clusters if t else None,
        "fixed": len(c.fixed),
        "broken": len(c.broken),
        "not_tested": c.not_tested or None,
    }


class Deciding:
    """The loop's side of a decision: the comparisons `decide` is given, the power
    planned before training, and the record stored with the decision. Mixed into the
    loop, whose attributes these are."""

    config: LoopConfig
    store: Store
    queries: Queries
    suite: Suite
    guard: Suite | None
    mining: Suite
    heldout: Suite

    def _last_decided(self, loop_id: int, before: int) -> dict[str, Any] | None:
        """The latest iteration before `before` that has a stored comparison: its paired
        MDEs are the loop's measured power (`_power`)."""
        for iteration in range(before - 1, 0, -1):
            row = iteration_row(self.store, loop_id, iteration)
            if row is not None and row.get("comparison"):
                return row
        return None

    def _decide(self, previous: Mapping[str, Any], row: Mapping[str, Any]) -> tuple[str, str, bool, dict[str, Any]]:
        main = self.suite.config.main
        observed = self._last_decided(row["loop_id"], row["iteration"])
        seeds = row["checkpoint"].get("seeds") or []
        suite_cmp = compare_seeds(self.queries, previous["eval_run_id"],
                                  [row["eval_run_id"], *(e["eval_run_id"] for e in seeds)],
                                  resamples=self.config.resamples, seed=self.config.seed,
                                  cluster_by=self.suite.config.cluster_by)
        guard_cmp: list[MetricComparison] = []
        if self.guard is not None and previous.get("guard_run_id") and row.get("guard_run_id"):
            guard_cmp = compare_seeds(self.queries, previous["guard_run_id"],
                                      [row["guard_run_id"], *(e["guard_run_id"] for e in seeds)],
                                      resamples=self.config.resamples, seed=self.config.seed,
                                      cluster_by=self.guard.config.cluster_by)
        guard_watch = set(self.config.guard_metrics or ([self.guard.config.main] if self.guard else []))
        main_cmp = next(c for c in suite_cmp if c.metric == main)
        decision = decide(
            main_cmp,
            [GuardCheck(c, self._margin(self.guard, c)) for c in guard_cmp if c.metric in guard_watch],
            suite=self.suite.name,
            guard_suite=self.guard.name if self.guard else None,
            target=self._target(),
            alpha=self.config.alpha,
            main_margin=self._margin(self.suite, main_cmp),
        )
        mining_cmp: list[MetricComparison] = []
        if previous.get("mining_run_id") and row.get("mining_run_id"):
            mining_cmp = compare_runs(self.queries, previous["mining_run_id"], row["mining_run_id"],
                                      resamples=self.config.resamples, seed=self.config.seed,
                                      cluster_by=self.suite.config.cluster_by)
        comparison = {
            "split": self.heldout.split_name,
            "metrics": [_comparison_record(c) for c in suite_cmp],
            "mining_split": self.mining.split_name,
            "mining": [_comparison_record(c) for c in mining_cmp],
            "guard": [_comparison_record(c) for c in guard_cmp],
            "decision": {**decision.record, "planned": self._power(previous, observed), "train_seeds": 1 + len(seeds),
                         "seed_runs": [{"seed": self.config.seed, "eval_run_id": row["eval_run_id"],
                                        "guard_run_id": row.get("guard_run_id")}]
                         + [{k: e.get(k) for k in ("seed", "eval_run_id", "guard_run_id")} for e in seeds]},
            "clusters": self._cluster_progress(row),
            "issues": self._issue_counts(previous["eval_run_id"], row["eval_run_id"]),
        }
        accepted = decision.decision in ("continue", "target_met")
        return decision.decision, decision.reason, accepted, comparison

    def _power(self, previous: Mapping[str, Any], observed: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Before training: the MDE of each metric the decision will test, from the last
        accepted checkpoint's runs (`planned_mde`, an upper bound that assumes the two
        checkpoints' errors independent), beside its margin; and, where an earlier
        decision of this loop compared the metric (`observed`, that iteration's stored
        comparison), the paired MDE it measured, which counts the correlation."""
        from harness.score.comparison import planned_mde

        watched = [(self.suite, previous.get("eval_run_id"), [self.suite.config.main])]
        if self.guard is not None:
            names = self.config.guard_metrics or [self.guard.config.main]
            watched.append((self.guard, previous.get("guard_run_id"), names))
        out = []
        for suite, run_id, metrics in watched:
            if not run_id:
                continue
            run = self.queries.run(run_id)
            scores = {c.metric: c.value for c in self.queries.corpus_scores(run_id)}
            for metric in metrics:
                if metric not in scores:
                    continue
                mde = planned_mde(self.queries, run, metric, alpha=self.config.alpha,
                                  resamples=self.config.resamples, seed=self.config.seed,
                                  cluster_by=suite.config.cluster_by)
                config = next((m for m in suite.config.metrics if m.name == metric), None)
                margin = resolve_margin(config.margin if config else None, scores[metric] or 0.0)
                entry = {"suite": suite.name, "metric": metric, "guard": suite is self.guard,
                         "mde": mde, "margin": margin, "n": run.n_samples}
                paired = _observed_mde(observed, "guard" if suite is self.guard else "metrics", metric)
                if paired is not None:
                    entry |= {"paired_mde": paired, "paired_from": observed["iteration"]}  # type: ignore[index]
                out.append(entry)
        return out

    def _power_lines(
        self, previous: Mapping[str, Any], observed: Mapping[str, Any] | None = None
    ) -> list[tuple[str, bool]]:
        """What the decision can detect, and a warning where the suite is too small for it.
        The paired MDE an earlier decision measured is the figure to judge by; before the
        first decision there is only the independent-errors bound, which a fine-tune's
        correlated errors usually beat by far (perplexity most of all), so it warns
        without predicting the outcome."""
        lines = []
        for p in self._power(previous, observed):
            if p["mde"] is None:
                continue
            where = f"{p['suite']} {p['metric']} ({p['n']} samples)"
            paired = p.get("paired_mde")
            if paired is not None:
                mde, basis = paired, (f"paired, as measured at iteration {p['paired_from']}; "
                                      f"the independent-errors bound is {p['mde']:.3g}")
            else:
                mde, basis = p["mde"], "an upper bound: errors assumed independent"
            lines.append((
                f"power: {where} detects a change of {mde:.3g} at alpha {self.config.alpha:g} with power 0.8 "
                f"({basis}); margin {p['margin']:.3g}", False,
            ))
            if mde <= p["margin"]:
                continue
            if p["guard"] and paired is not None:
                lines.append((
                    f"the guard {where} is too small to show non-inferiority within its margin {p['margin']:.3g} "
                    f"(paired MDE {mde:.3g} at iteration {p['paired_from']}): a guard that stays level will most "
                    "likely roll the loop back, one that clearly improves can still pass; give the guard more "
                    "samples or a wider `margin:`", True,
                ))
            elif p["guard"]:
                lines.append((
                    f"the guard {where} may be too small to show non-inferiority within its margin "
                    f"{p['margin']:.3g} (MDE bound {mde:.3g}): the paired comparison is tighter as far as the "
                    "checkpoints' errors correlate, and is measured at the first decision; if the guard rolls "
                    "the loop back, give it more samples or a wider `margin:`", True,
                ))
            else:
                lines.append((
                    f"{where} cannot detect a gain of its margin {p['margin']:.3g} (MDE {mde:.3g}): gains "
                    "below the MDE will read as underpowered; give the suite more samples", True,
                ))
        return lines

    @staticmethod
    def _margin(suite: Suite | None, comparison: MetricComparison) -> float:
        """The metric's margin in its units, against the earlier checkpoint's score."""
        config = next((m for m in suite.config.metrics if m.name == comparison.metric), None) if suite else None
        baseline = comparison.test.score_a if comparison.test is not None else 0.0
        return resolve_margin(config.margin if config else None, baseline)

    def _cluster_progress(self, row: Mapping[str, Any]) -> list[dict[str, Any]]:
        """How many members of each targeted cluster (mining-split samples) still fail on
        the new checkpoint's mining run."""
        return cluster_progress(self.store, row["mining_run_id"], row["clustering_id"])

    def _issue_counts(self, run_a: int, run_b: int) -> dict[str, dict[str, int]]:
        return issue_counts(self.store, run_a, run_b)

    def _target(self) -> float | None:
        main = self.suite.config.main
        return next((m.target for m in self.suite.config.metrics if m.name == main), None)
