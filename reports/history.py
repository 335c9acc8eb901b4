"""The `history` report: a loop's iterations, what each one did and what it changed.

Figures of the suite are of its held-out split (the loop decides there), with the
mining split (where failures are clustered and data gathered) beside them; a loop made
before splits existed mined and decided on the same samples, and says so.

For every iteration: the suite's main metric with its interval, the guard suite's main
metric, failing samples, clusters targeted, data added, tokens trained and evaluated,
what the work would cost elsewhere, and the decision with its reason; trend lines of
the main figures; the change from iteration 0 to the checkpoint the loop kept, with a
paired test; and per iteration, how the targeted clusters fared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import (
    Badge,
    Column,
    Document,
    IterationInfo,
    KeyValues,
    LoopInfo,
    Notice,
    Paragraph,
    Queries,
    ReportView,
    Spark,
    Table,
    Text,
    compare_runs,
    format_value,
    hookimpl,
)
from harness.reports._shared import format_duration

_DECISION_TONES = {
    "baseline": "neutral",
    "continue": "good",
    "target_met": "good",
    "no_gain": "neutral",
    "underpowered": "warn",
    "rollback": "bad",
}


class HistoryReport(ReportView):
    name = "history"
    description = "a loop's iterations: metrics, issues, clusters, data, tokens, cost and decisions"

    def build(  # type: ignore[override]
        self, queries: Queries, *, loop: str | int = "latest", resamples: int = 1000, seed: int = 12345
    ) -> Document:
        info = queries.loop(loop)
        iterations = queries.iterations(info.loop_id)
        config = info.config
        doc = Document(
            title=f"Loop {info.loop_id} · {info.suite_name}",
            subtitle=f"{config.get('trainer', '?')} on {config.get('selection', '?')} data from "
            f"{config.get('source', '?')} · {info.status}",
            kind="history",
            name=f"loop-{info.loop_id}",
        )
        if info.status != "finished":
            doc.add(Notice(f"the loop is {info.status}: run the same `harness loop` command to resume it"))
        doc.section("Loop").add(KeyValues(_header(info, iterations)))
        if info.mining_split is None:
            doc.add(Notice(
                "this loop was made before held-out splits: it mined failures and took its decisions on "
                "the same samples, so its gains are optimistic"
            ))

        done = [it for it in iterations if it.decision is not None]
        overall = _overall_change(queries, info, done, resamples, seed)
        if overall is not None:
            doc.section("Change").add(*overall[0])

        section = doc.section("Iterations")
        section.add(_iterations_table(done, info))
        if len(done) > 1:
            section.add(_trends(done))
        for it in done:
            if it.iteration == 0:
                continue
            sub = section.section(f"Iteration {it.iteration}: {it.decision}")
            sub.add(Paragraph(Text(it.reason or "", kind="strong")))
            sub.add(Paragraph(Text(_rule_line(it), kind="muted")))
            guards = (it.comparison.get("decision") or {}).get("guards") or []
            if guards:
                sub.add(_guards_table(guards))
            metrics = it.comparison.get("metrics", []) + it.comparison.get("guard", [])
            if metrics:
                sub.add(_comparison_table(it))
            clusters = it.comparison.get("clusters", [])
            if clusters:
                sub.add(_clusters_table(clusters))
            notes = queries.budget_notes(it.manifest_hash) if it.manifest_hash else {}
            for cluster, note in notes.items():
                sub.add(Paragraph(Text(f"cluster {cluster} got half its share of the budget: {note}")))
            issues = it.comparison.get("issues", {})
            if issues:
                sub.add(
                    Table(
                        [Column("detector"), Column("before", numeric=True), Column("after", numeric=True)],
                        [[name, c.get("before", 0), c.get("after", 0)] for name, c in sorted(issues.items())],
                        title="issues on the suite",
                    )
                )
        if done:
            doc.section("Cost").add(_cost_table(done))

        doc.data = {
            "loop": {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in info.__dict__.items()},
            "iterations": [_iteration_data(it) for it in iterations],
            "change": overall[1] if overall else None,
        }
        return doc


def _data_line(c: dict[str, Any]) -> str:
    seed = Path(c["seed_data"]).name if c.get("seed_data") else None
    if c.get("selection") == "none":
        return f"no new data: the seed {seed} alone (the control)"
    line = f"{c.get('selection')} selection from {c.get('source')}, {c.get('budget')} rows per iteration"
    return line + (f", on top of the seed {seed}" if seed else "")


def _header(info: LoopInfo, iterations: list[IterationInfo]) -> list[tuple[str, Any]]:
    c = info.config
    return [
        ("status", Badge(info.status, "good" if info.status == "finished" else "warn")),
        ("suite", info.suite_name),
        ("splits", _splits(info)),
        ("guard suite", info.guard_suite or "none"),
        ("base model", info.base_model + (f" + {c['adapter']}" if c.get("adapter") else "")),
        ("trainer", f"{c.get('trainer')} {c.get('trainer_args') or ''}".strip()),
        ("data", _data_line(c)),
        ("retrain from", c.get("retrain_from")),
        (
            "iterations",
            f"{max((it.iteration for it in iterations), default=0)} of {c.get('iterations')}"
            + (" (fixed: every iteration runs)" if c.get("fixed_iterations") else ""),
        ),
        ("kept", f"iteration {info.final_iteration}" if info.final_iteration is not None else "-"),
        ("stopped", info.stop_reason or "-"),
        ("checkpoints", info.output_dir),
        ("started", f"{info.started_at:%Y-%m-%d %H:%M} UTC"),
        (
            "time",
            format_duration((info.finished_at - info.started_at).total_seconds()) if info.finished_at else "-",
        ),
    ]


def _splits(info: LoopInfo) -> str:
    if info.mining_split is None:
        return "none (mined and decided on the same samples)"
    sizes = info.split_sizes or {}
    how = ("made by the harness: the suite declares none (stratified by tags, paraphrase groups whole, "
           "fixed seed)" if info.split_auto else "declared by the suite")
    return (
        f"mined on {info.mining_split} ({sizes.get(info.mining_split, '?')} samples), decided on "
        f"{info.heldout_split} ({sizes.get(info.heldout_split, '?')}); {how}"
    )


def _overall_change(
    queries: Queries, info: LoopInfo, done: list[IterationInfo], resamples: int, seed: int
) -> tuple[list[Any], dict[str, Any]] | None:
    """From iteration 0 to the kept checkpoint, with a paired test per metric."""
    if info.final_iteration is None or info.final_iteration == 0 or not done:
        return None
    first = next((it for it in done if it.iteration == 0), None)
    last = next((it for it in done if it.iteration == info.final_iteration), None)
    if first is None or last is None or first.eval_run_id is None or last.eval_run_id is None:
        return None
    rows, data = [], []
    pairs = [(info.heldout_split or "suite", first.eval_run_id, last.eval_run_id)]
    if first.mining_run_id and last.mining_run_id:
        pairs.append((f"{info.mining_split} (mined)", first.mining_run_id, last.mining_run_id))
    if first.guard_run_id and last.guard_run_id:
        pairs.append(("guard", first.guard_run_id, last.guard_run_id))
    for label, a, b in pairs:
        for c in compare_runs(queries, a, b, resamples=resamples, seed=seed):
            t = c.test
            outcome = c.outcome()
            rows.append([
                f"{label}: {c.metric} {'↑' if c.higher_is_better else '↓'}",
                t.score_a if t else None,
                t.score_b if t else None,
                t.difference if t else None,
                t.p_value if t else None,
                Badge(outcome, {"better": "good", "worse": "bad"}.get(outcome, "neutral")),
            ])
            data.append({"suite": label, "metric": c.metric, "before": t.score_a if t else None,
                         "after": t.score_b if t else None, "p_value": t.p_value if t else None,
                         "outcome": outcome})
    table = Table(
        [Column("metric"), Column("iteration 0", numeric=True), Column(f"iteration {info.final_iteration}", numeric=True),
         Column("change", numeric=True, format="+.4g"), Column("p", numeric=True, format=".3g"), Column("verdict")],
        rows,
        title=f"iteration 0 → iteration {info.final_iteration} (the checkpoint the loop kept)",
        caption="paired tests on the same samples: bootstrap (McNemar for exact match); "
        "better/worse also needs the 95% interval of the change to exclude 0.",
    )
    return [table], {"from": 0, "to": info.final_iteration, "metrics": data}


def _iterations_table(done: list[IterationInfo], info: LoopInfo) -> Table:
    main = _main_metric(done)
    split = f" ({info.heldout_split})" if info.heldout_split else ""
    rows = []
    for it in done:
        low, high = it.main_ci
        ci = f"{format_value(low)}–{format_value(high)}" if low is not None and high is not None else ""
        rows.append([
            it.iteration,
            Badge(it.decision or "-", _DECISION_TONES.get(it.decision or "", "neutral")),
            it.main_value,
            ci,
            it.mining_value,
            it.guard_value,
            it.failing,
            it.clusters,
            f"+{it.rows_added} = {it.rows_total}" if it.rows_added is not None else "",
            it.tokens_trained,
            it.tokens_evaluated,
            "kept" if it.iteration == info.final_iteration else ("yes" if it.accepted else "no"),
        ])
    return Table(
        [
            Column("iter", numeric=True),
            Column("decision"),
            Column(main + split, numeric=True),
            Column("95% CI", wide_only=True),
            Column(f"{info.mining_split or 'mining'} (mined)", numeric=True),
            Column("guard", numeric=True),
            Column("failing", numeric=True),
            Column("clusters", numeric=True, wide_only=True),
            Column("data"),
            Column("tokens trained", numeric=True, format=",d", wide_only=True),
            Column("tokens evaluated", numeric=True, format=",d", wide_only=True),
            Column("accepted"),
        ],
        rows,
        title="iterations",
        caption="clusters: of the previous checkpoint's failures on the mining split, which the data "
        "targeted; data: rows added and the dataset's size; failing: on the held-out split.",
    )


def _trends(done: list[IterationInfo]) -> Table:
    def line(values: list[float | None]) -> Spark:
        return Spark(tuple(float(v) if v is not None else 0.0 for v in values))

    rows = [
        ["suite main metric (held out)", line([it.main_value for it in done]), _span(done, "main_value")],
        ["suite main metric (mined)", line([it.mining_value or 0.0 for it in done]), _span(done, "mining_value")],
        ["guard main metric", line([it.guard_value for it in done]), _span(done, "guard_value")],
        ["failing samples", line([it.failing for it in done]), _span(done, "failing")],
        ["training rows", line([it.rows_total or 0 for it in done]), _span(done, "rows_total")],
    ]
    return Table([Column("trend"), Column("by iteration"), Column("first → last")], rows, title="trends")


def _span(done: list[IterationInfo], attr: str) -> str:
    values = [getattr(it, attr) for it in done if getattr(it, attr) is not None]
    return f"{format_value(values[0])} → {format_value(values[-1])}" if values else "-"


def _comparison_table(it: IterationInfo) -> Table:
    rows = []
    sections = (
        (it.comparison.get("split") or "suite", it.comparison.get("metrics", [])),
        (f"{it.comparison.get('mining_split')} (mined)", it.comparison.get("mining", [])),
        ("guard", it.comparison.get("guard", [])),
    )
    for label, items in sections:
        for m in items:
            rows.append([
                f"{label}: {m['metric']}",
                m.get("before"),
                m.get("after"),
                m.get("difference"),
                m.get("p_value"),
                m.get("mde"),
                f"{m.get('fixed', 0)} / {m.get('broken', 0)}",
            ])
    return Table(
        [Column("metric"), Column("before", numeric=True), Column("after", numeric=True),
         Column("change", numeric=True, format="+.4g"), Column("p", numeric=True, format=".3g"),
         Column("MDE", numeric=True, wide_only=True), Column("fixed / broken")],
        rows,
        title=f"compared with iteration {it.compared_to}",
    )


_OLD_RULE = (
    "decided under rule 1 (before this version): samples resampled one by one, the guard rolled back "
    "only on a significant drop, no correction for several tests"
)


def _rule_line(it: IterationInfo) -> str:
    """Which rule took the decision: old decisions stay as they were made."""
    if it.decision_rule is None:
        return _OLD_RULE
    record = it.comparison.get("decision") or {}
    family = record.get("family") or []
    holm = ", ".join(f"{f['suite']} {f['metric']} p={f['p']:.3g} → {f['p_holm']:.3g}" for f in family)
    return (
        f"decided under rule {it.decision_rule}: clustered paired tests, non-inferiority guards, "
        f"Holm across {len(family)} test(s) at alpha {record.get('alpha', 0.05):g}" + (f" ({holm})" if holm else "")
    )


def _guards_table(guards: list[dict[str, Any]]) -> Table:
    rows = []
    for g in guards:
        ci = g.get("ci")
        rows.append([
            g["metric"], g.get("change"), f"[{ci[0]:+.3g}, {ci[1]:+.3g}]" if ci else "–",
            g.get("margin"), g.get("verdict"), g.get("resampled") or "–",
        ])
    return Table(
        [Column("guard metric"), Column("change", numeric=True, format="+.4g"), Column("95% CI", numeric=True),
         Column("margin", numeric=True, format=".3g"), Column("verdict"), Column("resampled", wide_only=True)],
        rows,
        title="non-inferiority: the guard passes when its interval stays above -margin",
    )


def _clusters_table(clusters: list[dict[str, Any]]) -> Table:
    return Table(
        [Column("cluster", numeric=True), Column("label"), Column("size", numeric=True),
         Column("still failing", numeric=True), Column("fixed", numeric=True)],
        [[c["cluster_id"], c["label"], c["size"], c["still_failing"], c["fixed"]] for c in clusters],
        title="targeted clusters: how many of their samples still fail",
    )


def _cost_table(done: list[IterationInfo]) -> Table:
    names: list[str] = []
    for it in done:
        for name in (it.cost.get("services") or {}):
            if name not in names:
                names.append(name)
        for name in (it.cost.get("gpus") or {}):
            if name not in names:
                names.append(name)
    currency = next((it.cost.get("currency") for it in done if it.cost), "USD")
    as_of = next((it.cost.get("prices_as_of") for it in done if it.cost), "?")
    rows = []
    totals = [0.0] * len(names)
    for it in done:
        row: list[Any] = [it.iteration]
        for i, name in enumerate(names):
            value = (it.cost.get("services") or {}).get(name)
            if value is None:
                value = ((it.cost.get("gpus") or {}).get(name) or {}).get("cost")
            row.append(value)
            totals[i] += value or 0.0
        rows.append(row)
    rows.append(["total", *totals])
    return Table(
        [Column("iter"), *[Column(name, numeric=True, format=".4f") for name in names]],
        rows,
        title=f"what the same work would cost ({currency}, example prices as of {as_of})",
        caption="from measured token counts and an editable price table (harness/prices.yaml, "
        "or --prices): estimates, not quotes.",
    )


def _main_metric(done: list[IterationInfo]) -> str:
    for it in done:
        for m in it.comparison.get("metrics", []):
            return str(m.get("metric"))
    return "main metric"


def _iteration_data(it: IterationInfo) -> dict[str, Any]:
    return {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in it.__dict__.items()}


@hookimpl
def harness_register_reports(registry: Any) -> None:
    registry.add_report(HistoryReport())
