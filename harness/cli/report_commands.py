"""`harness show`, `harness compare`, `harness sql`: reading what the store holds."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from harness.cli.common import CONTEXT_SETTINGS, CliState, pass_state
from harness.cli.params import SEED, OutputPath

FORMAT_CHOICES = ("terminal", "html", "markdown", "json")


def output_options(fn: Any) -> Any:
    """--format / --output, shared by the report commands."""
    fn = click.option(
        "--output",
        "-O",
        "output",
        type=OutputPath(dir_okay=True, allow_dash=True),
        default=None,
        help="File or directory to write; '-' for standard output. Files go to "
        "./harness-reports/ when --format is not terminal and no --output is given.",
    )(fn)
    fn = click.option(
        "--format",
        "-f",
        "format_",
        type=click.Choice(FORMAT_CHOICES),
        default="terminal",
        show_default=True,
        help="terminal prints here; html is one self-contained file; json holds the data.",
    )(fn)
    return fn


def _report(state: CliState, view: str, format_: str, output: Path | None, **params: Any) -> None:
    from harness.report.show import show_report

    plugins = state.load_plugins()
    with state.reader() as store:
        path = show_report(
            store,
            view,
            console=state.console,
            format=format_,
            output=output,
            plugins=plugins,
            **params,
        )
    if path is not None:
        state.err.print(f"wrote {path}", highlight=False)


@click.command("show", context_settings=CONTEXT_SETTINGS)
@click.argument("run", default="latest")
@output_options
@click.option(
    "--worst",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="Worst samples to show.",
)
@click.option(
    "--examples",
    default=3,
    show_default=True,
    type=click.IntRange(min=0),
    help="Examples per detector.",
)
@click.option(
    "--samples",
    "all_samples",
    is_flag=True,
    help="Also list every sample (all of them go into JSON).",
)
@click.option(
    "--view",
    default="run",
    show_default=True,
    help="Report view to build (a plugin may add its own).",
)
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="The run's header in full: library and plugin versions, git revision, host "
    "(always in html and json).",
)
@pass_state
def show_command(
    state: CliState,
    run: str,
    format_: str,
    output: Path | None,
    worst: int,
    examples: int,
    all_samples: bool,
    view: str,
    verbose: bool,
) -> None:
    """Show the report of RUN: a run id, 'latest' (the default) or 'latest~N'.

    \b
    Examples:
      harness show                          the latest run, in the terminal
      harness show 12 --format html         ./harness-reports/run-12.html
      harness show latest -f json -O -      the data, on standard output
    """
    params: dict[str, Any] = {"run": run}
    if view == "run":
        params.update(
            worst=worst, examples=examples, samples=all_samples, verbose=verbose or format_ != "terminal"
        )
    _report(state, view, format_, output, **params)


@click.command("compare", context_settings=CONTEXT_SETTINGS)
@click.argument("run_a", default="latest~1")
@click.argument("run_b", default="latest")
@output_options
@click.option(
    "--resamples",
    default=1000,
    show_default=True,
    type=click.IntRange(min=100),
    help="Bootstrap resamples.",
)
@click.option(
    "--seed", default=12345, show_default=True, type=SEED, help="Bootstrap seed (12345 is sacrebleu's)."
)
@click.option(
    "--flips",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="Fixed and broken samples to show.",
)
@pass_state
def compare_command(
    state: CliState,
    run_a: str,
    run_b: str,
    format_: str,
    output: Path | None,
    resamples: int,
    seed: int,
    flips: int,
) -> None:
    """Compare RUN_B against the baseline RUN_A (two runs of the same suite).

    For each metric: the difference with its interval, a paired test (paired bootstrap
    over per-sample statistics as sacrebleu computes it; McNemar's exact test for 0/1
    metrics such as exact match), the minimum detectable effect, and the samples that
    were fixed or broken. By default compares the latest run with the one before it.

    \b
    Examples:
      harness compare 3 5
      harness compare latest~1 latest --format html
    """
    _report(
        state,
        "compare",
        format_,
        output,
        run_a=run_a,
        run_b=run_b,
        resamples=resamples,
        seed=seed,
        flips=flips,
    )


@click.command("history", context_settings=CONTEXT_SETTINGS)
@click.argument("loop", default="latest")
@output_options
@click.option("--list", "list_loops", is_flag=True, help="List the loops instead.")
@pass_state
def history_command(state: CliState, loop: str, format_: str, output: Path | None, list_loops: bool) -> None:
    """Show the history of LOOP (a loop id, 'latest' or 'latest~N'): every iteration's
    metrics, issues, clusters, data, tokens, cost and decision, with trend lines and the
    change from iteration 0 to the checkpoint the loop kept.

    \b
    Examples:
      harness history                       the latest loop
      harness history 3 --format html       ./harness-reports/loop-3.html
      harness history --list                every loop
    """
    if list_loops:
        from rich.table import Table as RichTable

        from harness.store.queries import Queries

        with state.reader() as store:
            loops = Queries(store).loops()
        if not loops:
            state.console.print("no loops yet: try `harness loop dictionary --model default`")
            return
        table = RichTable(title="loops", title_justify="left")
        for column in ("id", "suite", "status", "kept", "stopped", "started"):
            table.add_column(column)
        for info in loops:
            table.add_row(
                str(info.loop_id), info.suite_name, info.status,
                str(info.final_iteration) if info.final_iteration is not None else "-",
                info.stop_reason or "-", f"{info.started_at:%Y-%m-%d %H:%M}",
            )
        state.console.print(table)
        return
    _report(state, "history", format_, output, loop=loop)


@click.command("sql", context_settings=CONTEXT_SETTINGS)
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--csv", "as_csv", is_flag=True, help="Print the rows as CSV.")
@click.option(
    "--max-rows",
    default=200,
    show_default=True,
    type=click.IntRange(min=1),
    help="Rows shown in the table view.",
)
@pass_state
def sql_command(state: CliState, query: str, as_json: bool, as_csv: bool, max_rows: int) -> None:
    """Run a SQL QUERY on the store, opened read-only ('-' reads the query from stdin).

    \b
    Examples:
      harness sql "SELECT run_id, metric, value FROM corpus_scores ORDER BY run_id"
      harness sql "SELECT detector, count(*) FROM issues GROUP BY ALL" --csv
    Tables and columns: docs/schema.md, or `harness sql "DESCRIBE runs"`.
    """
    from harness.errors import ConfigError
    from harness.store.sandbox import read_only_sql

    if as_json and as_csv:
        raise ConfigError("choose one of --json and --csv")
    if query == "-":
        query = sys.stdin.read()
    with state.reader() as store:
        table = read_only_sql(store, query)
    columns = table.column_names
    rows = table.to_pylist()
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2, ensure_ascii=False))
        return
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(row[c]) for c in columns])
        return
    out = Table(show_lines=False, title_justify="left")
    for name in columns:
        out.add_column(Text(name), overflow="fold")
    for row in rows[:max_rows]:
        out.add_row(*(_cell(row[c]) for c in columns))
    state.console.print(out)
    more = len(rows) - max_rows
    state.err.print(
        f"{len(rows)} row(s)"
        + (f", {more} not shown (--max-rows, or --csv/--json for all)" if more > 0 else ""),
        highlight=False,
    )


def _cell(value: Any) -> Text:
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, float):
        return Text(f"{value:.6g}" if math.isfinite(value) else str(value))
    if isinstance(value, (list, dict)):
        return Text(json.dumps(value, default=str, ensure_ascii=False))
    return Text(str(value))


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return value


def register(group: click.Group) -> None:
    for command in (show_command, compare_command, history_command, sql_command):
        group.add_command(command)
