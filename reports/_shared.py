"""Pieces the report views share: a run's model as one label, durations, and an output
with its evidence highlighted."""

from __future__ import annotations

from collections.abc import Sequence

from harness import Highlight, RunInfo, Text

OUTPUT_CHARS = 600
"""Longest stretch of an output a record shows (around its first highlighted span)."""


def model_label(info: RunInfo) -> str:
    label = info.model_path
    if info.adapter_path:
        label += f" + {info.adapter_path}"
    return label


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def highlighted(output: str | None, spans: Sequence[tuple[int | None, int | None, str]]) -> Text:
    """An output with evidence spans marked, cut to a readable length around them."""
    if output is None:
        return Text("(no output stored)", kind="muted")
    marks = tuple(
        Highlight(s, e, m) for s, e, m in spans if s is not None and e is not None and e > s
    )
    return Text(output, marks, kind="output").excerpt(OUTPUT_CHARS)
