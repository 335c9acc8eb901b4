"""The `compare` report: two runs of the same suite, metric by metric and sample by sample.

For each metric: both scores, the difference (B - A) with its bootstrap interval, a
paired test, and the minimum detectable effect at this sample size. Metrics with 0/1
outcomes (exact match) use McNemar's exact test; all others the paired bootstrap over
the stored per-sample sufficient statistics, computed as sacrebleu computes it (so BLEU,
chrF, WER, CER and perplexity are resampled at the corpus level, not as means of
sentence scores). Then the samples that flipped: fixed (failing in A, passing in B) and
broken (the reverse), by each metric's sample_threshold or, for 0/1 metrics, by
correctness; broken first, largest change first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from harness import (
    ALPHA,
    Badge,
    Column,
    ConfigError,
    Document,
    Flip,
    Interval,
    MetricComparison,
    Notice,
    Paragraph,
    Queries,
    Record,
    ReportView,
    RunInfo,
    SampleDetail,
    Table,
    Text,
    compare_metric,
    format_value,
    hookimpl,
)
from harness.reports._shared import OUTPUT_CHARS, format_duration, highlighted, model_label

_TONES = {
    "better": "good",
    "worse": "bad",
    "no difference": "neutral",
    "not significant": "neutral",
    "not tested": "warn",
}


def verdict(c: MetricComparison) -> Badge:
    outcome = c.outcome()
    return Badge(outcome, _TONES[outcome])


class CompareReport(ReportView):
    name = "compare"
    description = "two runs of one suite: paired tests per metric, detectable effect, samples fixed and broken"

    def build(  # type: ignore[override]
        self,
        queries: Queries,
        *,
        run_a: str | int = "latest~1",
        run_b: str | int = "latest",
        resamples: int = 1000,
        seed: int = 12345,
        flips: int = 10,
    ) -> Document:
        """`run_a` is the baseline, `run_b` the candidate; `resamples` and `seed` drive
        the paired bootstrap (12345 is sacrebleu's default seed); `flips`: how many
        fixed and broken samples to show in full."""
        a, b = queries.run(run_a), queries.run(run_b)
        if a.suite_name != b.suite_name:
            raise ConfigError(
                f"run {a.run_id} evaluated suite {a.suite_name!r} and run {b.run_id} suite "
                f"{b.suite_name!r}: compare two runs of the same suite"
            )
        notices = comparison_notices(a, b)
        if a.run_id == b.run_id:
            notices.insert(
                0, Notice(f"run {a.run_id} compared with itself: no difference", "neutral")
            )
        scores_a = {s.metric: s for s in queries.corpus_scores(a.run_id)}
        scores_b = {s.metric: s for s in queries.corpus_scores(b.run_id)}
        shared = [m for m in scores_a if m in scores_b]
        missing = sorted(set(scores_a) ^ set(scores_b))
        if missing:
            notices.append(
                Notice(
                    f"metrics scored in only one run are left out: {', '.join(missing)}", "neutral"
                )
            )
        cluster_by = b.cluster_by or a.cluster_by
        comparisons = [
            compare_metric(
                queries, a, b, scores_a[m], scores_b[m], resamples=resamples, seed=seed, cluster_by=cluster_by
            )
            for m in shared
        ]
        for c in comparisons:
            if c.not_tested:
                notices.append(Notice(f"{c.metric}: not tested: {c.not_tested}"))
        unpaired = max((max(c.only_a, c.only_b) for c in comparisons), default=0)
        if unpaired:
            notices.append(
                Notice(
                    f"some samples were scored in only one run ({unpaired} at most per metric); "
                    "the tests use the samples both runs scored",
                    "neutral",
                )
            )

        doc = Document(
            title=f"Compare run {a.run_id} → run {b.run_id} · {a.suite_name}",
            subtitle=f"A: {model_label(a)}   B: {model_label(b)}",
            kind="compare",
            name=f"compare-{a.run_id}-{b.run_id}",
        )
        doc.add(*notices)
        doc.section("Runs").add(runs_table(a, b))
        section = doc.section("Metrics")
        stored = {m: (scores_a[m].value, scores_b[m].value) for m in shared}
        section.add(metrics_table(comparisons, a.main_metric, resamples, seed, stored))

        section = doc.section("Flipped samples")
        with_flips = [c for c in comparisons if c.criterion]
        if with_flips:
            section.add(flips_table(with_flips))
        no_criterion = [c.metric for c in comparisons if not c.criterion]
        if no_criterion:
            section.add(
                Paragraph(
                    Text(
                        f"no pass/fail criterion for {', '.join(no_criterion)}: set a sample_threshold "
                        "in the suite to list the samples that flip on it",
                        kind="muted",
                    )
                )
            )
        broken = flipped_samples(comparisons, "broken", a.main_metric)
        fixed = flipped_samples(comparisons, "fixed", a.main_metric)
        shown = [sample for sample, _ in broken[:flips] + fixed[:flips]]
        details_a = {d.sample_id: d for d in queries.sample_details(a.run_id, shown)}
        details_b = {d.sample_id: d for d in queries.sample_details(b.run_id, shown)}
        for label, samples, tone in (
            ("Broken: pass in A, fail in B", broken, "bad"),
            ("Fixed: fail in A, pass in B", fixed, "good"),
        ):
            sub = section.section(f"{label} ({len(samples)})")
            if not samples:
                sub.add(Paragraph(Text("none", kind="muted")))
            for sample_id, sample_flips in samples[:flips]:
                sub.add(
                    flip_record(
                        sample_id,
                        sample_flips,
                        details_a.get(sample_id),
                        details_b.get(sample_id),
                        tone,
                    )
                )
            if len(samples) > flips:
                sub.add(
                    Paragraph(
                        Text(
                            f"and {len(samples) - flips} more (all are listed in the JSON export)",
                            kind="muted",
                        )
                    )
                )

        doc.data = {
            "a": a.as_dict(),
            "b": b.as_dict(),
            "notices": [n.text for n in notices],
            "alpha": ALPHA,
            "resamples": resamples,
            "seed": seed,
            "metrics": [comparison_data(c) for c in comparisons],
            "broken": [s for s, _ in broken],
            "fixed": [s for s, _ in fixed],
        }
        return doc


# ---------------------------------------------------------------------------
# The comparison itself
# ---------------------------------------------------------------------------


def comparison_notices(a: RunInfo, b: RunInfo) -> list[Notice]:
    notices = []
    if a.suite_hash != b.suite_hash:
        notices.append(
            Notice(
                f"the suite differs between the runs (v{a.suite_version} [{a.suite_hash[:12]}] vs "
                f"v{b.suite_version} [{b.suite_hash[:12]}]: changed data or settings, or a different "
                "--limit): only samples with the same id are compared"
            )
        )
    for info in (a, b):
        if info.status not in ("completed", "completed_with_errors"):
            notices.append(
                Notice(f"run {info.run_id} is {info.status}: its results may be partial")
            )
    if a.run_id != b.run_id:
        if a.checkpoint_hash == b.checkpoint_hash:
            notices.append(Notice("both runs used the same checkpoint", "neutral"))
        if a.generation != b.generation:
            changed = sorted(
                k
                for k in set(a.generation) | set(b.generation)
                if a.generation.get(k) != b.generation.get(k)
            )
            notices.append(Notice(f"generation parameters differ: {', '.join(changed)}", "neutral"))
    return notices


def flipped_samples(
    comparisons: Sequence[MetricComparison], kind: str, main: str
) -> list[tuple[str, list[Flip]]]:
    """Samples that broke (or were fixed) on any metric, worst first: most metrics
    flipped, then the largest change on the main metric, then the largest change."""
    by_sample: dict[str, list[Flip]] = {}
    for c in comparisons:
        for flip in getattr(c, kind):
            by_sample.setdefault(flip.sample_id, []).append(flip)
    # Broken: the most negative change first; fixed: the most positive first.
    sign = 1.0 if kind == "broken" else -1.0

    def key(item: tuple[str, list[Flip]]) -> tuple[Any, ...]:
        sample_id, found = item
        main_change = next((f.change for f in found if f.metric == main), 0.0)
        extreme = min(sign * f.change for f in found)
        return (-len(found), sign * main_change, extreme, sample_id)

    return sorted(by_sample.items(), key=key)


# ---------------------------------------------------------------------------
# Layout
# ---------------------------------------------------------------------------


def runs_table(a: RunInfo, b: RunInfo) -> Table:
    def gen(info: RunInfo) -> str:
        g = info.generation
        return " ".join(
            f"{k}={g[k]}" for k in ("max_new_tokens", "temperature", "top_p", "top_k") if k in g
        )

    rows: list[list[Any]] = [
        ["run", a.run_id, b.run_id],
        ["model", a.model_path, b.model_path],
        ["adapter", a.adapter_path or "–", b.adapter_path or "–"],
        ["checkpoint", a.checkpoint_hash[:12], b.checkpoint_hash[:12]],
        [
            "suite",
            f"v{a.suite_version} [{a.suite_hash[:12]}]",
            f"v{b.suite_version} [{b.suite_hash[:12]}]",
        ],
        ["status", a.status, b.status],
        ["samples", a.n_samples, b.n_samples],
        ["seed", a.seed, b.seed],
        ["generation", gen(a), gen(b)],
        ["started", f"{a.started_at:%Y-%m-%d %H:%M}", f"{b.started_at:%Y-%m-%d %H:%M}"],
        ["time", format_duration(a.duration_s), format_duration(b.duration_s)],
    ]
    if a.label or b.label:
        rows.insert(1, ["label", a.label or "–", b.label or "–"])
    return Table([Column(""), Column("A"), Column("B")], rows)


def _p(value: float) -> str:
    if value < 0.001:
        return "<0.001"
    return f"{value:.3f}"


def _decimals(*values: float) -> int:
    """Decimals that suit a metric's scale: 2 for scores in the tens (BLEU, chrF),
    3 for fractions (exact match, WER)."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    return 2 if max(finite, default=0.0) >= 10 else 3


def _signed(value: float, decimals: int) -> str:
    return "–" if not math.isfinite(value) else f"{value:+.{decimals}f}"


def metrics_table(
    comparisons: Sequence[MetricComparison],
    main: str,
    resamples: int,
    seed: int,
    stored: Mapping[str, tuple[float | None, float | None]] | None = None,
) -> Table:
    """`stored`: each metric's corpus values as the runs stored them, shown (with their
    difference) for a metric that could not be tested, e.g. when its plugin is not loaded."""
    rows = []
    for c in comparisons:
        t = c.test
        name = f"{c.metric} {'↑' if c.higher_is_better else '↓'}" + (
            " (main)" if c.metric == main else ""
        )
        if t is None:
            value_a, value_b = (stored or {}).get(c.metric, (None, None))
            known = value_a is not None and value_b is not None
            places = _decimals(value_a, value_b) if known else 2
            difference = _signed(value_b - value_a, places) if known else "–"
            rows.append([name, value_a, value_b, difference, "–", "–", "–", verdict(c), "–", None])
            continue
        places = _decimals(t.score_a, t.score_b)
        rows.append(
            [
                name,
                t.score_a,
                t.score_b,
                _signed(t.difference, places),
                f"[{_signed(t.ci_low, places)}, {_signed(t.ci_high, places)}]",
                _p(t.p_value),
                "–" if not math.isfinite(t.mde) else f"{t.mde:.{places}f}",
                verdict(c),
                "McNemar" if t.test.startswith("mcnemar") else f"bootstrap over {c.resampled}",
                Interval(t.difference, t.ci_low, t.ci_high),
            ]
        )
    return Table(
        [
            Column("metric"),
            Column("A", numeric=True),
            Column("B", numeric=True),
            Column("Δ B−A", numeric=True),
            Column("95% CI of Δ", numeric=True),
            Column("p", numeric=True),
            Column("MDE", numeric=True),
            Column("verdict"),
            Column("test", wide_only=True),
            Column("Δ around 0", wide_only=True),
        ],
        rows,
        caption=(
            f"p: two-sided; paired bootstrap as sacrebleu computes it ({resamples} resamples, seed "
            f"{seed}), or McNemar's exact test for 0/1 metrics. MDE: the smallest difference this "
            f"many samples detect at alpha {ALPHA} with power 0.8. {_resampling_note(comparisons)}"
        ),
    )


def _resampling_note(comparisons: Sequence[MetricComparison]) -> str:
    """Say what the tests resampled: grouped samples are not independent."""
    clustered = {c.resampled for c in comparisons if c.test is not None and c.test.clusters is not None}
    if not clustered:
        return "Resampled: samples (no sample groups)."
    return (
        f"Resampled: {', '.join(sorted(clustered))}, so that correlated samples count once; "
        "0/1 metrics use the cluster bootstrap instead of McNemar."
    )


def flips_table(comparisons: Sequence[MetricComparison]) -> Table:
    return Table(
        [
            Column("metric"),
            Column("pass when"),
            Column("fixed", numeric=True),
            Column("broken", numeric=True),
            Column("net", numeric=True),
        ],
        [
            [
                c.metric,
                c.criterion,
                len(c.fixed),
                len(c.broken),
                f"{len(c.fixed) - len(c.broken):+d}",
            ]
            for c in comparisons
        ],
    )


def flip_record(
    sample_id: str, flips: Sequence[Flip], a: SampleDetail | None, b: SampleDetail | None, tone: Any
) -> Record:
    badges = [
        Badge(f"{f.metric} {format_value(f.value_a)} → {format_value(f.value_b)}", tone)
        for f in flips
    ]
    fields: list[tuple[str, Any]] = []
    detail = b or a
    if detail is not None:
        fields.append(("instruction", Text(detail.instruction, kind="output")))
        if detail.input:
            fields.append(("input", Text(detail.input, kind="output")))
        if detail.references:
            fields.append(
                ("reference", Text(detail.references[0], kind="output").excerpt(OUTPUT_CHARS))
            )
    for label, d in (("output A", a), ("output B", b)):
        if d is not None:
            spans = [(i.span_start, i.span_end, f"{i.detector}: {i.message}") for i in d.issues]
            fields.append((label, highlighted(d.output, spans)))
    return Record(f"sample {sample_id}", fields, badges)


def comparison_data(c: MetricComparison) -> dict[str, Any]:
    t = c.test
    return {
        "metric": c.metric,
        "higher_is_better": c.higher_is_better,
        "n": c.n,
        "only_a": c.only_a,
        "only_b": c.only_b,
        "test": t.test if t else None,
        "not_tested": c.not_tested or None,
        "score_a": t.score_a if t else None,
        "score_b": t.score_b if t else None,
        "difference": t.difference if t else None,
        "ci_low": t.ci_low if t else None,
        "ci_high": t.ci_high if t else None,
        "p_value": t.p_value if t else None,
        "mde": t.mde if t else None,
        "resampled": c.resampled if t else None,
        "clusters": t.clusters if t else None,
        "cluster_by": c.cluster_by or "group",
        "significant": c.significant() if t else None,
        "verdict": verdict(c).text,
        "criterion": c.criterion or None,
        "fixed": [vars(f) for f in c.fixed],
        "broken": [vars(f) for f in c.broken],
    }


@hookimpl
def harness_register_reports(registry: Any) -> None:
    registry.add_report(CompareReport())
