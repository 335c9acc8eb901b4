"""The viewer's plots, as Vega-Lite specs built with Altair (rendered in the browser by
the vendored vega-embed). Each function returns a plain dict, ready for JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def metric_by_iteration(points: Sequence[dict[str, Any]], metric: str, title: str) -> dict[str, Any]:
    """One point per iteration with its confidence interval as an error bar.

    `points`: dicts with iteration, value, low, high, decision."""
    import altair as alt

    data = alt.Data(values=[dict(p) for p in points])
    base = alt.Chart(data).encode(
        x=alt.X("iteration:O", title="iteration", axis=alt.Axis(labelAngle=0))
    )
    line = base.mark_line(color="#2f6fd0").encode(y=alt.Y("value:Q", title=metric))
    bars = base.mark_rule(color="#2f6fd0").encode(y="low:Q", y2="high:Q")
    dots = base.mark_point(filled=True, size=70, color="#2f6fd0").encode(
        y="value:Q",
        tooltip=[
            alt.Tooltip("iteration:O"),
            alt.Tooltip("value:Q", format=".3f"),
            alt.Tooltip("low:Q", format=".3f", title="CI low"),
            alt.Tooltip("high:Q", format=".3f", title="CI high"),
            alt.Tooltip("decision:N"),
        ],
    )
    chart = alt.layer(line, bars, dots).properties(title=title, width=420, height=220)
    return chart.to_dict()


def training_curves(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Loss by step, one line per training run (named by its iteration) and split.

    `points`: dicts with run (a label), split, step, loss."""
    import altair as alt

    chart = (
        alt.Chart(alt.Data(values=[dict(p) for p in points]))
        .mark_line(point=True)
        .encode(
            x=alt.X("step:Q", title="step"),
            y=alt.Y("loss:Q", title="loss", scale=alt.Scale(zero=False)),
            color=alt.Color("run:N", title="training"),
            strokeDash=alt.StrokeDash("split:N", title="split"),
            tooltip=["run:N", "split:N", "step:Q", alt.Tooltip("loss:Q", format=".4f")],
        )
        .properties(title="training and validation loss", width=420, height=220)
    )
    return chart.to_dict()
