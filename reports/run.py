"""The `run` report: one evaluation run, from its header to its worst samples.

Sections: the header (model, adapter, suite, generation parameters, seed, versions,
git revision, timing); metrics with confidence intervals and pass/fail against the
suite's targets; failing samples and why; issues per detector with their worst examples
(evidence highlighted); error clusters, when the run has been clustered; the worst
samples by the main metric; plugin errors recorded against the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness import (
    Badge,
    BarChart,
    Clustering,
    Column,
    CorpusScore,
    Document,
    IssueExample,
    KeyValues,
    Notice,
    Paragraph,
    Queries,
    Record,
    ReportView,
    RunInfo,
    SampleDetail,
    Section,
    Spark,
    Table,
    Text,
    describe_clustering,
    format_value,
    histogram,
    hookimpl,
    planned_mde,
)
from harness.reports._shared import OUTPUT_CHARS, format_duration, highlighted, model_label


class RunReport(ReportView):
    name = "run"
    description = (
        "one run: header, metrics with intervals and targets, issues, worst samples, plugin errors"
    )

    def build(  # type: ignore[override]
        self,
        queries: Queries,
        *,
        run: str | int = "latest",
        worst: int = 10,
        examples: int = 3,
        samples: bool = False,
        verbose: bool = False,
    ) -> Document:
        """`worst`: how many worst samples to show; `examples`: worst examples per
        detector; `samples`: also list every sample (and put them all in the data);
        `verbose`: the run's header in full (library and plugin versions, git, host)."""
        info = queries.run(run)
        run_id = info.run_id
        scores = queries.corpus_scores(run_id)
        values = queries.sample_values(run_id)
        reasons = queries.failure_reasons(run_id)
        failing = queries.failing_count(run_id)
        detectors = queries.detector_summaries(run_id)
        issue_examples = queries.issue_examples(run_id, per_detector=examples) if examples else {}
        clustering = queries.clustering(run_id)
        scored = any(s.metric == info.main_metric for s in scores)  # not so in a failed run
        worst_samples = (
            queries.worst_samples(run_id, info.main_metric, limit=worst) if worst and scored else []
        )
        errors = queries.errors(run_id)

        doc = Document(
            title=f"Run {run_id} · {info.suite_name} v{info.suite_version}",
            subtitle=f"{model_label(info)} · {info.status} · started {info.started_at:%Y-%m-%d %H:%M} UTC",
            kind="run",
            name=f"run-{run_id}",
        )
        doc.add(*status_notices(info, len(errors)))

        # What people look for first: the scores and what fails; then how it ran.
        section = doc.section("Metrics")
        if scores:
            mdes = {s.metric: planned_mde(queries, info, s.metric) for s in scores}
            section.add(metrics_table(scores, values, info.main_metric, mdes, resampled_units(queries, info)))
        else:
            section.add(Paragraph(Text("no scores stored for this run", kind="muted")))

        section = doc.section("Failing samples")
        share = failing / info.n_samples if info.n_samples else 0.0
        section.add(Paragraph(f"{failing} of {info.n_samples} samples fail ({share:.0%})."))
        if reasons:
            section.add(
                BarChart(list(reasons.items()), title="samples failing, by reason", format="d")
            )

        doc.section("Run").add(KeyValues(header_items(info, len(errors), verbose=verbose)))

        section = doc.section("Issues")
        if detectors:
            section.add(detector_table(detectors))
            for summary in detectors:
                found = issue_examples.get(summary.detector, [])
                if found:
                    sub = section.section(f"{summary.detector}: most severe")
                    sub.add(*(issue_record(e, summary.threshold) for e in found))
        else:
            section.add(Paragraph(Text("the suite runs no detectors", kind="muted")))

        if clustering is not None:
            doc.blocks.append(clusters_section(queries, run_id, clustering, examples))

        if worst_samples:
            section = doc.section(f"Worst samples by {info.main_metric}")
            for detail in worst_samples:
                section.add(sample_record(detail, info.main_metric, scores))

        if errors:
            section = doc.section("Plugin errors")
            section.add(
                Table(
                    [
                        Column("plugin"),
                        Column("hook"),
                        Column("component"),
                        Column("sample"),
                        Column("message"),
                    ],
                    [
                        [e.plugin, e.hook, e.component or "", e.sample_id or "–", e.message]
                        for e in errors
                    ],
                )
            )

        all_samples = queries.samples(run_id).to_pylist() if samples else None
        if all_samples is not None:
            section = doc.section("All samples")
            section.add(all_samples_table(all_samples, info.main_metric))

        doc.data = {
            "run": info.as_dict(),
            "metrics": [vars(s) for s in scores],
            "failing": {"samples": failing, "of": info.n_samples, "reasons": reasons},
            "detectors": [vars(d) for d in detectors],
            "issue_examples": {k: [vars(e) for e in v] for k, v in issue_examples.items()},
            "clustering": None
            if clustering is None
            else {
                **{k: v for k, v in vars(clustering).items() if k != "clusters"},
                "clusters": [vars(c) for c in clustering.clusters],
            },
            "worst_samples": [sample_data(d) for d in worst_samples],
            "errors": [vars(e) for e in errors],
        }
        if all_samples is not None:
            doc.data["samples"] = all_samples
        return doc


# ---------------------------------------------------------------------------
# Pieces
# ---------------------------------------------------------------------------


def status_notices(info: RunInfo, n_errors: int) -> list[Notice]:
    if info.status == "failed":
        return [Notice(f"run {info.run_id} failed: {info.error or 'no error recorded'}", "bad")]
    if info.status == "running":
        return [
            Notice(
                f"run {info.run_id} has not finished (still running, or interrupted): results may be partial"
            )
        ]
    if n_errors:
        return [
            Notice(
                f"{n_errors} plugin error(s) were recorded against this run; see 'Plugin errors'"
            )
        ]
    return []


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "–"


def header_items(info: RunInfo, n_errors: int, *, verbose: bool = True) -> list[tuple[str, Any]]:
    gen = info.generation
    generation = " ".join(
        f"{key}={gen[key]!r}" if isinstance(gen[key], (list, str)) else f"{key}={gen[key]}"
        for key in ("max_new_tokens", "temperature", "top_p", "top_k", "stop")
        if key in gen and gen[key] not in ((), [], None)
    )
    prompt = info.prompt.get("format", "?")
    if info.prompt.get("template"):
        prompt += f" ({info.prompt['template']!r})"
    if info.prompt.get("system"):
        prompt += f", system {info.prompt['system']!r}"
    options = ", ".join(f"{k}={v}" for k, v in sorted(info.backend_options.items()))
    timing = format_duration(info.duration_s)
    if info.generation_s is not None or info.scoring_s is not None:
        timing += f" (generation {format_duration(info.generation_s)}, scoring {format_duration(info.scoring_s)})"
    items: list[tuple[str, Any]] = [
        (
            "status",
            Badge(info.status, {"completed": "good", "failed": "bad"}.get(info.status, "warn")),
        ),
        ("model", f"{info.model_path}  [{_short(info.model_hash)}]"),
    ]
    if info.adapter_path:
        items.append(("adapter", f"{info.adapter_path}  [{_short(info.adapter_hash)}]"))
    items += [
        ("backend", info.backend + (f" ({options})" if options else "")),
        ("suite", f"{info.suite_name} v{info.suite_version}  [{_short(info.suite_hash)}]"),
        ("split", info.split or "whole suite"),
        ("samples", info.n_samples),
        ("prompt", prompt),
        ("generation", generation),
        ("seed", info.seed),
        ("started", f"{info.started_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("time", timing),
    ]
    if verbose:
        items += [
            ("git revision", info.git_revision or "–"),
            ("host", info.host or "–"),
            ("versions", ", ".join(f"{k} {v}" for k, v in info.library_versions.items())),
            ("plugins", ", ".join(f"{k} {v}" for k, v in info.plugin_versions.items())),
        ]
    items.append(("plugin errors", n_errors))
    if info.label:
        items.insert(1, ("label", info.label))
    return items


def metric_name(name: str, higher_is_better: bool, main: str) -> str:
    return f"{name} {'↑' if higher_is_better else '↓'}" + (" (main)" if name == main else "")


def resampled_units(queries: Queries, info: Any) -> str:
    """What the run's bootstrap resampled: 'samples' or '35 clusters (by group)'."""
    labels = queries.sample_clusters(info.run_id, queries.sample_ids(info.run_id), info.cluster_by)
    groups = int(labels.max()) + 1 if len(labels) else 0
    if groups >= len(labels):
        return "samples"
    return f"{groups} clusters of samples ({describe_clustering(info.cluster_by)})"


def metrics_table(
    scores: Sequence[CorpusScore],
    values: dict[str, Any],
    main: str,
    mdes: dict[str, float | None] | None = None,
    resampled: str = "samples",
) -> Table:
    """`mdes`: each metric's minimum detectable effect for a paired comparison against
    this run (`harness.planned_mde`)."""
    mdes = mdes or {}
    rows = []
    for s in scores:
        if s.passed is None:
            result: Any = "–" if s.target is None else Badge("no score", "warn")
        else:
            result = Badge("pass", "good") if s.passed else Badge("fail", "bad")
        interval = (
            f"{format_value(s.ci_low)} – {format_value(s.ci_high)}"
            if s.ci_low is not None and s.ci_high is not None
            else "–"
        )
        rows.append(
            [
                metric_name(s.metric, s.higher_is_better, main),
                s.value,
                interval,
                mdes.get(s.metric),
                s.target,
                result,
                s.n,
                Spark(
                    histogram(values.get(s.metric, [])),
                    label=f"distribution of per-sample {s.metric}",
                ),
            ]
        )
    confidence = scores[0].confidence if scores else 0.95
    return Table(
        [
            Column("metric"),
            Column("value", numeric=True),
            Column(f"{confidence:.0%} CI", numeric=True),
            Column("MDE", numeric=True),
            Column("target", numeric=True),
            Column("result"),
            Column("n", numeric=True),
            Column("per sample", wide_only=True),
        ],
        rows,
        caption=(
            f"CI: percentile bootstrap over {resampled}. MDE: the smallest change a paired comparison "
            "with this run detects at alpha 0.05 and power 0.8 (an upper bound: it assumes the other "
            "run's errors independent of this one's). ↑ higher is better, ↓ lower is better."
        ),
    )


def detector_table(detectors: Sequence[Any]) -> Table:
    return Table(
        [
            Column("detector"),
            Column("threshold", numeric=True),
            Column("issues", numeric=True),
            Column("samples", numeric=True),
            Column("failing", numeric=True),
            Column("max severity", numeric=True, format=".2f"),
        ],
        [
            [d.detector, d.threshold, d.issues, d.samples, d.failing, d.max_severity]
            for d in detectors
        ],
        caption="failing: samples with an issue at or above the detector's threshold.",
    )


def severity_tone(severity: float, threshold: float | None) -> Any:
    return "bad" if threshold is not None and severity >= threshold else "warn"


def issue_record(example: IssueExample, threshold: float | None) -> Record:
    badges = [Badge(f"severity {example.severity:.2f}", severity_tone(example.severity, threshold))]
    if example.count > 1:
        badges.append(Badge(f"{example.count} issues", "neutral"))
    fields = [("issue", example.message), ("output", highlighted(example.output, example.spans))]
    return Record(f"sample {example.sample_id}", fields, badges)


def sample_record(detail: SampleDetail, main: str, scores: Sequence[CorpusScore]) -> Record:
    directions = {s.metric: s.higher_is_better for s in scores}
    value = detail.scores.get(main)
    badges = [Badge(f"{main} {format_value(value)}", "neutral")]
    badges.append(Badge("fails", "bad") if detail.reasons else Badge("passes", "good"))
    fields: list[tuple[str, Any]] = [("instruction", Text(detail.instruction, kind="output"))]
    if detail.input:
        fields.append(("input", Text(detail.input, kind="output")))
    spans = [(i.span_start, i.span_end, f"{i.detector}: {i.message}") for i in detail.issues]
    fields.append(("output", highlighted(detail.output, spans)))
    for i, reference in enumerate(detail.references):
        label = "reference" if len(detail.references) == 1 else f"reference {i + 1}"
        fields.append((label, Text(reference, kind="output").excerpt(OUTPUT_CHARS)))
    fields.append(
        (
            "scores",
            " · ".join(
                f"{name} {format_value(v)}"
                + ("" if directions.get(name, True) else " (lower is better)")
                for name, v in detail.scores.items()
            ),
        )
    )
    if detail.issues:
        fields.append(
            (
                "issues",
                "; ".join(f"{i.detector} {i.severity:.2f}: {i.message}" for i in detail.issues),
            )
        )
    if detail.reasons:
        fields.append(("fails on", ", ".join(detail.reasons)))
    if detail.finish_reason == "length":
        fields.append(("finish", "hit max_new_tokens (output cut off)"))
    return Record(f"sample {detail.sample_id}", fields, badges)


CLUSTERS_SHOWN = 8
"""Clusters whose examples the report shows (the rest are in the table)."""


def clusters_section(
    queries: Queries, run_id: int, clustering: Clustering, examples: int
) -> Section:
    section = Section("Clusters")
    section.add(
        Paragraph(
            f"{clustering.n_failures} failing samples in {clustering.n_clusters} clusters "
            f"({clustering.featurizer} features, {clustering.clusterer}); "
            f"{clustering.unclustered} in no cluster."
        )
    )
    section.add(
        Table(
            [
                Column("cluster", numeric=True),
                Column("label"),
                Column("size", numeric=True),
                Column("dominant issue"),
                Column(
                    f"mean {clustering.clusters[0].score_metric or 'score'}"
                    if clustering.clusters
                    else "mean score",
                    numeric=True,
                ),
                Column("top terms", wide_only=True),
            ],
            [
                [
                    c.cluster_id if c.cluster_id >= 0 else "none",
                    c.label,
                    c.size,
                    c.dominant_issue or "–",
                    c.mean_score,
                    ", ".join(c.top_terms),
                ]
                for c in clustering.clusters
            ],
        )
    )
    shown = [c for c in clustering.clusters if c.cluster_id >= 0][:CLUSTERS_SHOWN]
    wanted = [sample for c in shown for sample in c.examples[:examples]]
    details = {d.sample_id: d for d in queries.sample_details(run_id, wanted)} if wanted else {}
    for c in shown:
        rows = [
            [
                details[s].sample_id,
                Text(details[s].input or details[s].instruction, kind="output").excerpt(120),
                highlighted(
                    details[s].output,
                    [(i.span_start, i.span_end, i.message) for i in details[s].issues],
                ).excerpt(240),
            ]
            for s in c.examples[:examples]
            if s in details
        ]
        if rows:
            section.section(f"cluster {c.cluster_id}: {c.label}").add(
                Table([Column("sample"), Column("input"), Column("output")], rows)
            )
    return section


def sample_data(detail: SampleDetail) -> dict[str, Any]:
    data = vars(detail).copy()
    data["issues"] = [vars(i) for i in detail.issues]
    return data


def all_samples_table(rows: Sequence[dict[str, Any]], main: str) -> Table:
    return Table(
        [
            Column("#", numeric=True),
            Column("sample"),
            Column(main, numeric=True),
            Column("output"),
            Column("fails on"),
        ],
        [
            [
                row["position"],
                row["sample_id"],
                (row["scores"] or {}).get(main),
                Text(row["output"] or "", kind="output").excerpt(160),
                ", ".join(row["reasons"]),
            ]
            for row in rows
        ],
    )


@hookimpl
def harness_register_reports(registry: Any) -> None:
    registry.add_report(RunReport())
