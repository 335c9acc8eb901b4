"""Documents as GitHub-flavoured Markdown.

Data is escaped twice over: HTML's special characters become entities (so a model
output of `<script>` stays text in any Markdown viewer) and Markdown's become
backslash escapes (so `*`, `|` or `[x](y)` in an output cannot format the page or
break a table).
"""

from __future__ import annotations

import math
import re
from typing import Any

from harness.document import (
    Badge,
    BarChart,
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
    interval_string,
    spark_string,
    visible,
)

# Brackets are escaped, so parentheses cannot form links and need no escape.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]#|~])")
_BADGE = {"good": "✅", "bad": "❌", "warn": "⚠️", "neutral": "•"}


def escape(text: str) -> str:
    """Plain text that Markdown (and HTML inside it) shows literally."""
    text = visible(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def render_markdown(document: Document) -> str:
    lines = [f"# {escape(document.title)}", ""]
    if document.subtitle:
        lines += [f"_{escape(document.subtitle)}_", ""]
    for block in document.blocks:
        lines += _block(block)
    return "\n".join(lines).rstrip() + "\n"


def _block(block: Any) -> list[str]:
    if isinstance(block, Section):
        out = ["#" * min(block.level, 6) + " " + escape(block.title), ""]
        for child in block.blocks:
            out += _block(child)
        return out
    if isinstance(block, KeyValues):
        return [f"- **{escape(k)}**: {inline(v)}" for k, v in block.items] + [""]
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, Paragraph):
        return [inline(block.text), ""]
    if isinstance(block, Notice):
        label = {"bad": "Error", "warn": "Warning", "good": "OK", "neutral": "Note"}[block.tone]
        return [f"> **{label}:** {escape(block.text)}", ""]
    if isinstance(block, Record):
        title = escape(block.title)
        badges = " ".join(inline(b) for b in block.badges)
        out = [f"**{title}**" + (f" {badges}" if badges else ""), ""]
        for label, value in block.fields:
            if (
                isinstance(value, Text)
                and value.kind == "output"
                and ("\n" in value.text or len(value.text) > 80)
            ):
                out += [f"- {escape(label)}:", ""]
                out += ["  > " + line if line else "  >" for line in _text(value).split("\n")]
                out.append("")
            else:
                out.append(f"- {escape(label)}: {inline(value)}")
        return out + [""]
    if isinstance(block, BarChart):
        top = max((v for _, v in block.bars if math.isfinite(v)), default=0.0)
        out = [f"_{escape(block.title)}_", ""] if block.title else []
        out += ["| | | |", "|---|---:|---|"]
        for label, value in block.bars:
            length = round(20 * value / top) if top > 0 and math.isfinite(value) else 0
            out.append(
                f"| {escape(label)} | {format_value(value, block.format)} | {'█' * length} |"
            )
        return out + [""]
    raise TypeError(f"cannot render a {type(block).__name__} as Markdown")


def _text(value: Text) -> str:
    """Escaped text with highlighted spans in bold."""
    parts = []
    for piece, covering in value.segments():
        escaped = escape(piece)
        if covering:
            # Bold line by line: emphasis cannot span a line break in Markdown.
            escaped = "\n".join(_bold(line) for line in escaped.split("\n"))
        parts.append(escaped)
    out = "".join(parts)
    return f"_{out}_" if value.kind == "muted" and out.strip() else out


def _bold(text: str) -> str:
    if not text.strip():
        return text
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()) :]
    return f"{lead}**{text.strip()}**{trail}"


def inline(value: Any, spec: str = ".4g") -> str:
    """A value on one line (for tables and lists): line breaks become <br>."""
    if isinstance(value, Text):
        text = _text(value)
    elif isinstance(value, Badge):
        text = f"{_BADGE[value.tone]} {escape(value.text)}"
    elif isinstance(value, Spark):
        text = spark_string(value.values)
    elif isinstance(value, Interval):
        text = "`" + interval_string(value) + "`"
    else:
        text = escape(format_value(value, spec))
    return text.replace("\r\n", "\n").replace("\n", "<br>")


def _table(table: Table) -> list[str]:
    out = [f"_{escape(table.title)}_", ""] if table.title else []
    out.append("| " + " | ".join(escape(c.name) for c in table.columns) + " |")
    out.append("|" + "|".join("---:" if c.numeric else "---" for c in table.columns) + "|")
    for row in table.rows:
        cells = [inline(v, c.format) or " " for v, c in zip(row, table.columns)]
        out.append("| " + " | ".join(cells) + " |")
    if table.caption:
        out += ["", f"_{escape(table.caption)}_"]
    return out + [""]
