"""Documents as one self-contained HTML file: inline CSS, inline SVG charts, no script,
nothing fetched from the network.

Every string from data goes through `escape` (control characters made visible, then
HTML-escaped), and a Content-Security-Policy forbids scripts and remote resources, so
that a model output such as `<script>…</script>` is shown as text and could not run
even if an escape were missed.
"""

from __future__ import annotations

import html
import itertools
import math
from typing import Any

from harness.document import (
    Badge,
    BarChart,
    Column,
    Document,
    Interval,
    KeyValues,
    Notice,
    Paragraph,
    Record,
    Section,
    Spark,
    Table,
    Text,
    format_value,
    visible,
)

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

_CSS = """
:root { --fg: #1d2330; --muted: #5c6577; --line: #dde1e8; --bg: #ffffff; --panel: #f6f7f9;
  --accent: #2f6fd0; --good: #1a7f37; --bad: #c4312b; --warn: #9a6700; --mark: #ffe58a; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e3e6ec; --muted: #9aa3b2; --line: #343a46; --bg: #16181d; --panel: #1f2229;
    --accent: #6ea2f5; --good: #4ac26b; --bad: #f47067; --warn: #d4a72c; --mark: #6b5a12; } }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 20px 64px; }
h1 { font-size: 1.6rem; margin: 0 0 4px; }
h2 { font-size: 1.25rem; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 22px 0 8px; }
h4 { font-size: 0.95rem; margin: 16px 0 6px; }
.subtitle, .muted { color: var(--muted); }
nav { margin: 10px 0 0; font-size: 0.9rem; }
nav a { color: var(--accent); margin-right: 14px; text-decoration: none; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 18px; margin: 8px 0; }
dl.kv dt { color: var(--muted); }
dl.kv dd { margin: 0; overflow-wrap: anywhere; }
.table-wrap { overflow-x: auto; margin: 8px 0 14px; }
table { border-collapse: collapse; font-size: 0.92rem; }
caption { text-align: left; font-style: italic; color: var(--muted); padding: 4px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); vertical-align: top; text-align: left; }
th { font-weight: 600; border-bottom: 2px solid var(--line); white-space: nowrap; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td { overflow-wrap: anywhere; max-width: 520px; }
.para { margin: 8px 0; }
figure { margin: 8px 0 14px; }
.table-caption { color: var(--muted); font-size: 0.85rem; margin-top: -8px; }
.output { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 0.88rem;
  white-space: pre-wrap; overflow-wrap: anywhere; margin: 0; }
mark { background: var(--mark); color: inherit; border-radius: 2px; padding: 0 1px; }
.badge { display: inline-block; font-size: 0.78rem; font-weight: 600; padding: 0 7px;
  border-radius: 10px; border: 1px solid currentColor; }
.good { color: var(--good); } .bad { color: var(--bad); } .warn { color: var(--warn); }
.neutral { color: var(--accent); }
.notice { border-left: 4px solid currentColor; background: var(--panel); padding: 8px 12px; margin: 10px 0; }
.notice span { color: var(--fg); }
article.record { background: var(--panel); border: 1px solid var(--line); border-radius: 6px;
  padding: 10px 14px; margin: 10px 0; }
article.record h4 { margin: 0 0 6px; }
article.record .badge { margin-left: 6px; }
svg text { fill: var(--fg); font: 12px system-ui, sans-serif; }
svg .bar { fill: var(--accent); }
svg .axis { stroke: var(--muted); }
"""


def escape(text: str) -> str:
    return html.escape(visible(text), quote=True)


def render_html(document: Document) -> str:
    ids = _Ids()
    body = [f"<h1>{escape(document.title)}</h1>"]
    if document.subtitle:
        body.append(f'<p class="subtitle">{escape(document.subtitle)}</p>')
    top = [b for b in document.blocks if isinstance(b, Section)]
    anchors = {id(s): ids.take(s.anchor) for s in top}
    if len(top) > 1:
        links = "".join(f'<a href="#{anchors[id(s)]}">{escape(s.title)}</a>' for s in top)
        body.append(f"<nav>{links}</nav>")
    for block in document.blocks:
        body.append(_block(block, ids, anchors))
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="generator" content="harness">\n'
        f"<title>{escape(document.title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f'<body>\n<main data-report="{escape(document.kind)}">\n'
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )


class _Ids:
    """Unique element ids for section anchors."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, base: str) -> str:
        base = base or "section"
        for n in itertools.count(1):
            candidate = base if n == 1 else f"{base}-{n}"
            if candidate not in self.used:
                self.used.add(candidate)
                return candidate
        raise AssertionError("unreachable")


def _block(block: Any, ids: _Ids, anchors: dict[int, str]) -> str:
    if isinstance(block, Section):
        anchor = anchors.get(id(block)) or ids.take(block.anchor)
        level = min(block.level, 6)
        inner = "\n".join(_block(b, ids, anchors) for b in block.blocks)
        return f'<section id="{anchor}">\n<h{level}>{escape(block.title)}</h{level}>\n{inner}\n</section>'
    if isinstance(block, KeyValues):
        items = "".join(f"<dt>{escape(k)}</dt><dd>{cell(v)}</dd>" for k, v in block.items)
        return f'<dl class="kv">{items}</dl>'
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Paragraph):
        return f'<div class="para">{cell(block.text)}</div>'
    if isinstance(block, Notice):
        label = {"bad": "Error", "warn": "Warning", "good": "OK", "neutral": "Note"}[block.tone]
        return f'<p class="notice {block.tone}"><strong>{label}:</strong> <span>{escape(block.text)}</span></p>'
    if isinstance(block, Record):
        badges = "".join(cell(b) for b in block.badges)
        fields = "".join(f"<dt>{escape(k)}</dt><dd>{cell(v)}</dd>" for k, v in block.fields)
        return f'<article class="record"><h4>{escape(block.title)}{badges}</h4><dl class="kv">{fields}</dl></article>'
    if isinstance(block, BarChart):
        return _bar_chart(block)
    raise TypeError(f"cannot render a {type(block).__name__} as HTML")


def text_html(value: Text) -> str:
    parts = []
    for piece, covering in value.segments():
        escaped = escape(piece)
        if covering:
            title = escape("; ".join(h.label for h in covering if h.label))
            escaped = (
                f'<mark title="{title}">{escaped}</mark>' if title else f"<mark>{escaped}</mark>"
            )
        parts.append(escaped)
    inner = "".join(parts)
    if value.kind == "output":
        return f'<div class="output">{inner}</div>'
    if value.kind == "muted":
        return f'<span class="muted">{inner}</span>'
    if value.kind == "strong":
        return f"<strong>{inner}</strong>"
    return inner


def cell(value: Any, column: Column | None = None) -> str:
    if isinstance(value, Text):
        return text_html(value)
    if isinstance(value, Badge):
        return f'<span class="badge {value.tone}">{escape(value.text)}</span>'
    if isinstance(value, Spark):
        return spark_svg(value)
    if isinstance(value, Interval):
        return interval_svg(value)
    return escape(format_value(value, column.format if column else ".4g"))


def _table(table: Table) -> str:
    head = "".join(
        f'<th class="num">{escape(c.name)}</th>' if c.numeric else f"<th>{escape(c.name)}</th>"
        for c in table.columns
    )
    rows = []
    for row in table.rows:
        cells = "".join(
            f'<td class="num">{cell(v, c)}</td>' if c.numeric else f"<td>{cell(v, c)}</td>"
            for v, c in zip(row, table.columns)
        )
        rows.append(f"<tr>{cells}</tr>")
    caption = f"<caption>{escape(table.title)}</caption>" if table.title else ""
    note = f'<p class="table-caption">{escape(table.caption)}</p>' if table.caption else ""
    return (
        f'<div class="table-wrap"><table>{caption}<thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>{note}"
    )


def spark_svg(spark: Spark, width: int = 96, height: int = 18) -> str:
    values = [v if math.isfinite(v) else 0.0 for v in spark.values]
    top = max(values, default=0.0)
    if not values:
        return ""
    step = width / len(values)
    bars = []
    for i, v in enumerate(values):
        h = 0.0 if top <= 0 else max(1.0 if v > 0 else 0.0, (height - 2) * v / top)
        bars.append(
            f'<rect class="bar" x="{i * step + 0.5:.1f}" y="{height - h:.1f}" '
            f'width="{max(step - 1, 1):.1f}" height="{h:.1f}"/>'
        )
    label = escape(spark.label)
    return (
        f'<svg class="spark" role="img" aria-label="{label}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{label}</title>{"".join(bars)}</svg>'
    )


def interval_svg(interval: Interval, width: int = 120, height: int = 16) -> str:
    ref = interval.reference
    points = [interval.value, interval.low, interval.high]
    if not all(math.isfinite(p) for p in points):
        return ""
    extent = max(abs(p - ref) for p in points) or 1.0

    def x(v: float) -> float:
        return 4 + (v - ref + extent) / (2 * extent) * (width - 8)

    mid = height / 2
    label = escape(format_value(interval, ".3g"))
    return (
        f'<svg class="interval" role="img" aria-label="{label}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}"><title>{label}</title>'
        f'<line class="axis" x1="{x(ref):.1f}" y1="1" x2="{x(ref):.1f}" y2="{height - 1}" stroke-width="1"/>'
        f'<line x1="{x(interval.low):.1f}" y1="{mid}" x2="{x(interval.high):.1f}" y2="{mid}" '
        f'stroke="currentColor" stroke-width="2"/>'
        f'<circle cx="{x(interval.value):.1f}" cy="{mid}" r="3.5" fill="currentColor"/></svg>'
    )


def _bar_chart(chart: BarChart) -> str:
    label_width, bar_width, row = 220, 360, 22
    top = max((v for _, v in chart.bars if math.isfinite(v)), default=0.0)
    height = row * len(chart.bars) + 4
    width = label_width + bar_width + 80
    rows = []
    for i, (label, value) in enumerate(chart.bars):
        y = i * row + 2
        length = bar_width * value / top if top > 0 and math.isfinite(value) else 0.0
        rows.append(
            f'<text x="{label_width - 8}" y="{y + 15}" text-anchor="end">{escape(_shorten(label, 34))}'
            f"<title>{escape(label)}</title></text>"
            f'<rect class="bar" x="{label_width}" y="{y + 3}" width="{length:.1f}" height="{row - 8}"/>'
            f'<text x="{label_width + length + 6:.1f}" y="{y + 15}">{escape(format_value(value, chart.format))}</text>'
        )
    title = f'<figcaption class="muted">{escape(chart.title)}</figcaption>' if chart.title else ""
    aria = escape(chart.title or "bar chart")
    return (
        f'<figure>{title}<svg role="img" aria-label="{aria}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">{"".join(rows)}</svg></figure>'
    )


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
