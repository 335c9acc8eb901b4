"""Renderers of report documents: terminal (rich), Markdown, HTML and JSON.

    from harness.report.render import render
    html = render(document, "html")

Every renderer shows model output verbatim but inert: control characters become
visible symbols, Markdown and HTML escape everything that comes from data.
"""

from __future__ import annotations

from harness.document import Document
from harness.errors import ConfigError

FORMATS: tuple[str, ...] = ("terminal", "markdown", "html", "json")
EXTENSIONS: dict[str, str] = {"terminal": "txt", "markdown": "md", "html": "html", "json": "json"}


def check_format(format: str) -> str:
    if format not in FORMATS:
        raise ConfigError(f"unknown report format {format!r}; formats: {', '.join(FORMATS)}")
    return format


def render(document: Document, format: str, *, width: int = 100) -> str:
    """The document as text in `format` (terminal: plain text, no colour, `width` columns)."""
    check_format(format)
    if format == "terminal":
        from harness.report.render.terminal import render_text

        return render_text(document, width=width)
    if format == "markdown":
        from harness.report.render.markdown import render_markdown

        return render_markdown(document)
    if format == "html":
        from harness.report.render.html import render_html

        return render_html(document)
    from harness.report.render.json import render_json

    return render_json(document)


__all__ = ["EXTENSIONS", "FORMATS", "check_format", "render"]
