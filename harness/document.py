"""The document model that report views build and renderers turn into output.

A view reads what it needs through `harness.store.queries.Queries`, then lays it out as a
`Document`: sections of blocks (key-value headers, tables, notices, sample records with
highlighted evidence, small charts). The same document renders to the terminal (rich),
Markdown, self-contained HTML and JSON (`harness.report.render`), so a view never formats for
one medium. `Document.data` holds the facts themselves (raw numbers, full texts) for the
JSON export; the blocks hold their presentation.

    doc = Document("Run 3", kind="run", name="run-3")
    doc.add(KeyValues([("model", "smollm2"), ("samples", 200)]))
    section = doc.section("Metrics")
    section.add(Table([Column("metric"), Column("value", numeric=True)], [["chrf", 41.2]]))
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

Tone = Literal["good", "bad", "warn", "neutral"]


@dataclass(frozen=True, slots=True)
class Highlight:
    """A span of a text to mark (the evidence of an issue): character offsets."""

    start: int
    end: int
    label: str = ""


@dataclass(frozen=True, slots=True)
class Text:
    """A piece of text, perhaps model output, with spans to highlight.

    `kind="output"` marks data shown verbatim (model output, prompts, references):
    renderers keep its line breaks and use a monospaced face where they can."""

    text: str
    highlights: tuple[Highlight, ...] = ()
    kind: Literal["plain", "output", "muted", "strong"] = "plain"

    def segments(self) -> list[tuple[str, tuple[Highlight, ...]]]:
        """The text cut at every highlight boundary: (piece, highlights covering it)."""
        spans = [
            Highlight(max(0, h.start), min(len(self.text), h.end), h.label)
            for h in self.highlights
            if h.end > h.start and h.start < len(self.text)
        ]
        if not spans:
            return [(self.text, ())] if self.text else []
        cuts = sorted({0, len(self.text), *(h.start for h in spans), *(h.end for h in spans)})
        out = []
        for start, end in itertools.pairwise(cuts):
            covering = tuple(h for h in spans if h.start <= start and end <= h.end)
            out.append((self.text[start:end], covering))
        return out

    def excerpt(self, limit: int) -> Text:
        """At most about `limit` characters, keeping the first highlight in view; cut ends
        are marked with '…' and highlights are shifted to match."""
        if len(self.text) <= limit:
            return self
        first = min((h.start for h in self.highlights if h.end > h.start), default=0)
        start = 0 if first < limit * 2 // 3 else max(0, first - limit // 3)
        end = min(len(self.text), start + limit)
        prefix = "…" if start > 0 else ""
        suffix = "…" if end < len(self.text) else ""
        shift = len(prefix) - start
        kept = tuple(
            Highlight(max(h.start, start) + shift, min(h.end, end) + shift, h.label)
            for h in self.highlights
            if h.end > start and h.start < end
        )
        return Text(prefix + self.text[start:end] + suffix, kept, self.kind)


@dataclass(frozen=True, slots=True)
class Badge:
    """A short status word (pass, fail, better, worse) with a tone renderers colour."""

    text: str
    tone: Tone = "neutral"


@dataclass(frozen=True, slots=True)
class Spark:
    """A tiny bar chart inside a cell: e.g. the histogram of per-sample scores."""

    values: tuple[float, ...]
    label: str = ""
    """What the bars are, for screen readers and hover text."""


@dataclass(frozen=True, slots=True)
class Interval:
    """An estimate with its interval, drawn on a scale around a reference (0 for a
    difference, or a target)."""

    value: float
    low: float
    high: float
    reference: float = 0.0


Cell: TypeAlias = "None | bool | int | float | str | Text | Badge | Spark | Interval"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    numeric: bool = False
    """Right-aligned, formatted with `format`."""
    format: str = ".4g"
    """A format spec for float cells."""
    wide_only: bool = False
    """Dropped by the terminal renderer below 100 columns (a chart, a secondary figure)."""


@dataclass
class Table:
    columns: list[Column]
    rows: list[list[Cell]]
    title: str = ""
    caption: str = ""


@dataclass
class KeyValues:
    """A header: label -> value pairs."""

    items: list[tuple[str, Cell]]


@dataclass
class Paragraph:
    text: Text | str


@dataclass
class Notice:
    """Something the reader must not miss: a warning, an error, a failed run."""

    text: str
    tone: Tone = "warn"


@dataclass
class Record:
    """One sample (or one example) shown in full: a title, badges, labelled fields."""

    title: str
    fields: list[tuple[str, Cell]]
    badges: list[Badge] = field(default_factory=list)


@dataclass
class BarChart:
    """Horizontal bars, one per label."""

    bars: list[tuple[str, float]]
    title: str = ""
    format: str = ".4g"


Block: TypeAlias = "Section | Table | KeyValues | Paragraph | Notice | Record | BarChart"


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)
    level: int = 2

    def add(self, *blocks: Any) -> Section:
        self.blocks.extend(blocks)
        return self

    def section(self, title: str) -> Section:
        child = Section(title, level=min(self.level + 1, 4))
        self.blocks.append(child)
        return child

    @property
    def anchor(self) -> str:
        return re.sub(r"[^0-9a-z]+", "-", self.title.lower()).strip("-")


@dataclass
class Document:
    """A report: a title, blocks and sections, and the data behind them (for JSON)."""

    title: str
    kind: str
    """The view that built it ('run', 'compare', ...)."""
    name: str
    """A file-name stem for exports ('run-12', 'compare-3-5')."""
    blocks: list[Block] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    subtitle: str = ""

    def add(self, *blocks: Any) -> Document:
        self.blocks.extend(blocks)
        return self

    def section(self, title: str) -> Section:
        child = Section(title)
        self.blocks.append(child)
        return child


# ---------------------------------------------------------------------------
# Helpers every renderer shares
# ---------------------------------------------------------------------------

_CONTROL_PICTURES = {code: chr(0x2400 + code) for code in range(0x20) if chr(code) not in "\n\t"}
_CONTROL_PICTURES[0x7F] = "\u2421"
_CONTROL_PICTURES.update({code: "\ufffd" for code in range(0x80, 0xA0)})
# Bidirectional overrides can make a terminal or page show text in another order than
# it has ("Trojan source"); show them as replacement characters instead.
_CONTROL_PICTURES.update(
    {code: "\ufffd" for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
)
_VISIBLE = str.maketrans(_CONTROL_PICTURES)


def visible(text: str) -> str:
    """Control characters (escape sequences, bidi overrides) shown as visible symbols,
    one character for one, so highlight offsets stay right. Model output passes through
    this before it reaches a terminal or a page."""
    return text.translate(_VISIBLE)


def format_value(value: Any, spec: str = ".4g") -> str:
    """A cell value as text: missing -> '–', floats by `spec`, booleans as yes/no."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return format(value, spec)
    if isinstance(value, (Text, Badge)):
        return value.text
    if isinstance(value, Interval):
        return f"{value.value:{spec}} [{value.low:{spec}}, {value.high:{spec}}]"
    if isinstance(value, Spark):
        return spark_string(value.values)
    return str(value)


_BLOCKS = "▁▂▃▄▅▆▇█"


def spark_string(values: Sequence[float]) -> str:
    """Unicode block characters, one per value, scaled to the largest."""
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    top = max(finite, default=0.0)
    if top <= 0:
        return _BLOCKS[0] * len(values)
    out = []
    for v in values:
        # Heights in eighths; any positive value stands above an empty bin.
        level = 0 if not math.isfinite(v) or v <= 0 else max(1, math.ceil(8 * v / top) - 1)
        out.append(_BLOCKS[min(level, len(_BLOCKS) - 1)])
    return "".join(out)


def interval_string(interval: Interval, width: int = 15) -> str:
    """A one-line drawing of an interval: '─' spans it, '●' is the estimate, '│' the
    reference. The scale is symmetric around the reference."""
    ref = interval.reference
    points = [interval.value, interval.low, interval.high]
    if not all(math.isfinite(p) for p in points):
        return " " * width
    extent = max(abs(p - ref) for p in points) or 1.0

    def col(x: float) -> int:
        return min(width - 1, max(0, round((x - ref + extent) / (2 * extent) * (width - 1))))

    cells = [" "] * width
    for i in range(col(interval.low), col(interval.high) + 1):
        cells[i] = "─"
    cells[col(ref)] = "│"
    cells[col(interval.value)] = "●"
    return "".join(cells)


def histogram(values: Sequence[float], bins: int = 12) -> tuple[float, ...]:
    """Counts of finite values in equal-width bins (for a `Spark`)."""
    import numpy as np

    array = np.asarray([v for v in values if v is not None], dtype=float)
    array = array[np.isfinite(array)]
    if not len(array):
        return ()
    low, high = float(array.min()), float(array.max())
    if low == high:
        return (float(len(array)),)
    counts, _ = np.histogram(array, bins=bins, range=(low, high))
    return tuple(float(c) for c in counts)


def walk(blocks: Sequence[Any]) -> list[Any]:
    """Every block, depth first (sections included)."""
    out = []
    for block in blocks:
        out.append(block)
        if isinstance(block, Section):
            out.extend(walk(block.blocks))
    return out
