"""Building a report view and rendering it to the terminal or a file.

    from harness.report.show import show_report
    with Store.reader() as store:
        show_report(store, "run", run="latest")                     # to the terminal
        show_report(store, "compare", format="html", run_a=3, run_b=5)  # ./harness-reports/compare-3-5.html

Views come from the registry (`harness_register_reports`), so a team's own view is
shown the same way as the built-in `run` and `compare`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from harness.document import Document
from harness.report.render import EXTENSIONS, check_format, render
from harness.store.queries import Queries

if TYPE_CHECKING:
    from harness.components.plugin_manager import Plugins
    from harness.store import Store

DEFAULT_OUTPUT_DIR = Path("harness-reports")
"""Where files go when no --output is given (relative to the working directory)."""


def build_report(
    store: Store, view: str, *, plugins: Plugins | None = None, **params: Any
) -> Document:
    """The document a view builds (plugins are loaded afresh when none are given)."""
    if plugins is None:
        from harness.components.plugin_manager import load_plugins

        plugins = load_plugins()
    report = plugins.registry.report(view, where="report")
    queries = Queries(store, registry=plugins.registry)
    with queries.session():
        return report.build(queries, **params)


def show_report(
    store: Store,
    view: str,
    *,
    console: Console | None = None,
    format: str = "terminal",
    output: str | Path | None = None,
    plugins: Plugins | None = None,
    **params: Any,
) -> Path | None:
    """Build the view and print it, or write it to a file; returns the file written.

    `output`: a file, a directory (the file is named after the report, e.g.
    `run-12.html`), or '-' for standard output. Without it the terminal format prints
    to `console` and the other formats go to ./harness-reports/."""
    check_format(format)
    document = build_report(store, view, plugins=plugins, **params)
    if format == "terminal" and output is None:
        from harness.report.render.terminal import print_document

        print_document(document, console or Console())
        return None
    text = render(document, format)
    if output is not None and str(output) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    path = output_path(document, format, output)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def output_path(document: Document, format: str, output: str | Path | None) -> Path:
    """Where a report file goes: `output` itself, or a file named after the report inside
    `output` (when it is a directory) or inside ./harness-reports/."""
    filename = f"{document.name}.{EXTENSIONS[format]}"
    if output is None:
        return DEFAULT_OUTPUT_DIR / filename
    path = Path(output).expanduser()
    if path.is_dir() or str(output).endswith(("/", "\\")):
        return path / filename
    return path
