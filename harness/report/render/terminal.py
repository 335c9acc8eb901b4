"""Documents in the terminal, with rich; readable at 80 columns.

Data never goes through rich's markup parser: every string from the store becomes a
`rich.text.Text`, so a model output such as "[bold]" or an escape sequence prints as
the characters it is. Without colour (a pipe, a file, NO_COLOR) highlighted evidence
is bracketed ⟦like this⟧, since a highlight would otherwise be invisible.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table as RichTable
from rich.text import Text as RichText

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
    interval_string,
    spark_string,
    visible,
)

WIDE = 100
"""Below this many columns, `Column(wide_only=True)` columns are left out."""
OPEN, CLOSE = "⟦", "⟧"

_TONES = {"good": "green", "bad": "red", "warn": "yellow", "neutral": "cyan"}
_HIGHLIGHT = "bold black on yellow"
_TEXT_STYLES = {"plain": "", "output": "", "muted": "dim", "strong": "bold"}


def print_document(document: Document, console: Console) -> None:
    plain = console.color_system is None or console.no_color
    console.print(TerminalRenderer(console.width, brackets=plain).document(document))


def render_text(document: Document, *, width: int = 100) -> str:
    """Plain text (no colour codes), `width` columns wide: for files and tests."""
    buffer = io.StringIO()
    console = Console(
        file=buffer, width=width, color_system=None, force_terminal=False, highlight=False
    )
    print_document(document, console)
    return "\n".join(line.rstrip() for line in buffer.getvalue().split("\n"))


class TerminalRenderer:
    """Turns document blocks into rich renderables for a console `width` columns wide."""

    def __init__(self, width: int, *, brackets: bool = False):
        self.width = width
        self.brackets = brackets

    def document(self, document: Document) -> RenderableType:
        parts: list[RenderableType] = [RichText(visible(document.title), style="bold")]
        if document.subtitle:
            parts.append(RichText(visible(document.subtitle), style="dim"))
        parts.extend(self.blocks(document.blocks))
        return Group(*parts)

    def blocks(self, blocks: list[Any]) -> Iterator[RenderableType]:
        for block in blocks:
            yield from self.block(block)

    def block(self, block: Any) -> Iterator[RenderableType]:
        if isinstance(block, Section):
            yield RichText("")
            if block.level <= 2:
                yield Rule(RichText(visible(block.title), style="bold"), align="left", style="dim")
            else:
                yield RichText(visible(block.title), style="bold underline")
            yield from self.blocks(block.blocks)
        elif isinstance(block, KeyValues):
            yield self.pairs(block.items, padding=2)
        elif isinstance(block, Table):
            yield self.table(block)
        elif isinstance(block, Paragraph):
            yield self.cell(block.text)
        elif isinstance(block, Notice):
            label = {"bad": "error", "warn": "warning", "good": "ok", "neutral": "note"}[block.tone]
            line = RichText(f"{label}: ", style=f"bold {_TONES[block.tone]}")
            line.append(visible(block.text))
            yield line
        elif isinstance(block, Record):
            yield self.record(block)
        elif isinstance(block, BarChart):
            yield self.bar_chart(block)
        else:
            raise TypeError(f"cannot render a {type(block).__name__} in the terminal")

    def cell(self, value: Any, column: Column | None = None) -> RichText:
        """One value as rich Text (never parsed as markup)."""
        if isinstance(value, Text):
            out = RichText(style=_TEXT_STYLES[value.kind])
            for piece, covering in value.segments():
                if covering and self.brackets:
                    out.append(OPEN + visible(piece) + CLOSE)
                else:
                    out.append(visible(piece), style=_HIGHLIGHT if covering else None)
            return out
        if isinstance(value, Badge):
            return RichText(visible(value.text), style=f"bold {_TONES[value.tone]}")
        if isinstance(value, Spark):
            return RichText(spark_string(value.values), style="cyan")
        if isinstance(value, Interval):
            return RichText(interval_string(value), style="cyan")
        return RichText(visible(format_value(value, column.format if column else ".4g")))

    def pairs(self, items: list[tuple[str, Any]], padding: int) -> RichTable:
        grid = RichTable.grid(padding=(0, padding))
        # Labels are short; a long one folds rather than pushing its value off the line.
        grid.add_column(style="dim", overflow="fold", max_width=max(12, self.width // 4))
        grid.add_column(overflow="fold")
        for key, value in items:
            grid.add_row(RichText(visible(key)), self.cell(value))
        return grid

    def table(self, table: Table) -> RenderableType:
        keep = [i for i, c in enumerate(table.columns) if self.width >= WIDE or not c.wide_only]
        out = RichTable(
            title=RichText(visible(table.title), style="italic") if table.title else None,
            title_justify="left",
            caption=RichText(visible(table.caption), style="dim") if table.caption else None,
            caption_justify="left",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            show_edge=False,
        )
        for i in keep:
            column = table.columns[i]
            out.add_column(
                RichText(visible(column.name)),
                justify="right" if column.numeric else "left",
                overflow="fold",
            )
        for row in table.rows:
            out.add_row(*(self.cell(row[i], table.columns[i]) for i in keep))
        return out

    def record(self, record: Record) -> RenderableType:
        title = RichText(visible(record.title), style="bold")
        for badge in record.badges:
            title.append("  ")
            title.append_text(self.cell(badge))
        return Panel(
            self.pairs(record.fields, padding=1),
            title=title,
            title_align="left",
            box=box.ROUNDED,
            padding=(0, 1),
        )

    def bar_chart(self, chart: BarChart) -> RenderableType:
        top = max((v for _, v in chart.bars if math.isfinite(v)), default=0.0)
        bar_width = max(10, min(40, self.width - 40))
        grid = RichTable.grid(padding=(0, 1))
        grid.add_column(overflow="fold", max_width=max(12, self.width // 3))
        grid.add_column(no_wrap=True)
        grid.add_column(justify="right", no_wrap=True)
        for label, value in chart.bars:
            length = round(bar_width * value / top) if top > 0 and math.isfinite(value) else 0
            grid.add_row(
                RichText(visible(label)),
                RichText("█" * length, style="cyan"),
                RichText(format_value(value, chart.format)),
            )
        if chart.title:
            return Group(RichText(visible(chart.title), style="italic"), grid)
        return grid
