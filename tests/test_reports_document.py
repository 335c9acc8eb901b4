"""The document model and its renderers, on hand-made documents."""

from __future__ import annotations

import json

import pytest
from rich.cells import cell_len

from harness.document import (
    Badge,
    BarChart,
    Column,
    Document,
    Highlight,
    Interval,
    KeyValues,
    Notice,
    Paragraph,
    Record,
    Spark,
    Table,
    Text,
    interval_string,
    spark_string,
    visible,
)
from harness.errors import ConfigError
from harness.report.render import render


def test_segments_cut_at_every_boundary_of_overlapping_highlights() -> None:
    text = Text("abcdefghij", (Highlight(2, 6, "one"), Highlight(4, 8, "two")))
    pieces = [(piece, tuple(h.label for h in covering)) for piece, covering in text.segments()]
    assert pieces == [("ab", ()), ("cd", ("one",)), ("ef", ("one", "two")), ("gh", ("two",)), ("ij", ())]
    # Spans outside the text are clipped, empty ones ignored.
    clipped = Text("abc", (Highlight(1, 99), Highlight(2, 2)))
    assert [(p, bool(c)) for p, c in clipped.segments()] == [("a", False), ("bc", True)]


def test_an_excerpt_keeps_the_evidence_in_view() -> None:
    output = "x" * 500 + "EVIDENCE" + "y" * 500
    text = Text(output, (Highlight(500, 508, "here"),), kind="output")
    short = text.excerpt(100)
    assert len(short.text) <= 102 and short.text.startswith("…") and short.text.endswith("…")
    (mark,) = short.highlights
    assert short.text[mark.start : mark.end] == "EVIDENCE"
    assert text.excerpt(5000) is text


def test_control_characters_become_visible_one_for_one() -> None:
    raw = "a\x1b[31mb\x07c\u202ed\te\nf"
    shown = visible(raw)
    assert len(shown) == len(raw)
    assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
    assert "\t" in shown and "\n" in shown and shown.startswith("a␛[31mb")


def test_little_charts() -> None:
    assert spark_string([0, 1, 2, 4]) == "▁▂▄█"
    assert spark_string([0, 0]) == "▁▁"
    drawing = interval_string(Interval(2.0, 1.0, 3.0), width=11)
    assert drawing.index("│") == 5 and drawing.index("●") > 5 and "─" in drawing
    assert interval_string(Interval(float("nan"), 0, 1), width=5) == "     "


def _document() -> Document:
    doc = Document("A <b>title</b>", kind="test", name="test-1", subtitle="sub | title")
    doc.add(Notice("watch <out>", "warn"))
    section = doc.section("Numbers & text")
    section.add(KeyValues([("model", "m*1*"), ("passed", True), ("missing", None)]))
    section.add(
        Table(
            [Column("name"), Column("value", numeric=True, format=".2f"), Column("chart", wide_only=True)],
            [["a|b", 1.2345, Spark((1.0, 2.0, 3.0))], ["<i>c</i>", float("nan"), Interval(1.0, 0.5, 1.5)]],
            title="numbers",
            caption="a caption",
        )
    )
    sub = section.section("Samples")
    sub.add(
        Record(
            "sample <1>",
            [("output", Text('say "<script>x</script>"', (Highlight(5, 13, 'a "quoted" label'),), kind="output"))],
            [Badge("fail", "bad")],
        )
    )
    sub.add(Paragraph(Text("[bold]not markup[/bold]", kind="muted")))
    doc.add(BarChart([("<reason>", 3.0), ("other", 1.0)], title="reasons"))
    doc.data = {"value": 1.5, "nan": float("nan"), "nested": {"list": (1, 2)}}
    return doc


def test_terminal_rendering_keeps_data_literal_and_narrow_columns_lean() -> None:
    narrow = render(_document(), "terminal", width=80)
    assert max(cell_len(line) for line in narrow.splitlines()) <= 80
    assert "[bold]not markup[/bold]" in narrow and 'say "⟦<script>⟧x</script>"' in narrow
    assert "1.23" in narrow and "▁" not in narrow  # the wide-only chart column is left out
    wide = render(_document(), "terminal", width=120)
    assert "▃▆█" in wide


def test_markdown_escapes_everything_from_data() -> None:
    markdown = render(_document(), "markdown")
    assert markdown.startswith("# A &lt;b&gt;title&lt;/b&gt;\n")
    assert "| a\\|b | 1.23 |" in markdown and "&lt;i&gt;c&lt;/i&gt;" in markdown
    assert "m\\*1\\*" in markdown and "\\[bold\\]" in markdown
    assert 'say "**&lt;script&gt;**x&lt;/script&gt;"' in markdown
    assert "<" not in markdown.replace("<br>", "")


def test_html_escapes_text_and_attributes() -> None:
    html = render(_document(), "html")
    assert "<b>title</b>" not in html and "A &lt;b&gt;title&lt;/b&gt;" in html
    assert '<mark title="a &quot;quoted&quot; label">&lt;script&gt;</mark>' in html
    assert "<i>c</i>" not in html and "&lt;reason&gt;" in html
    assert html.count("<svg") == 3  # the spark, the interval, the bar chart
    assert 'id="numbers-text"' in html and 'id="samples"' in html


def test_json_is_the_data() -> None:
    data = json.loads(render(_document(), "json"))
    assert data == {"report": "test", "title": "A <b>title</b>", "value": 1.5, "nan": None, "nested": {"list": [1, 2]}}


def test_unknown_formats_are_refused() -> None:
    with pytest.raises(ConfigError, match="formats: terminal, markdown, html, json"):
        render(_document(), "pdf")
