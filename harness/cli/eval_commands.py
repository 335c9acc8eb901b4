"""`harness eval`, `harness runs`, `harness plugins`."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click
import yaml
from rich.table import Table

from harness.cli.main import CONTEXT_SETTINGS, CliState, pass_state
from harness.errors import ConfigError


def parse_options(pairs: tuple[str, ...], flag: str) -> dict[str, Any]:
    """`key=value` pairs; values read as YAML scalars (16 -> int, true -> bool)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} {pair!r}: expected key=value, e.g. {flag} batch_size=16")
        options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return options


def model_options(fn: Any) -> Any:
    """--model / --adapter / --backend / --backend-option, shared by commands that load models."""
    fn = click.option(
        "-o",
        "--backend-option",
        "backend_options",
        multiple=True,
        metavar="KEY=VALUE",
        help="Backend option, repeatable (hf: batch_size, dtype, device, merge_adapter, ...).",
    )(fn)
    fn = click.option("--backend", default="hf", show_default=True, help="Model backend plugin.")(fn)
    fn = click.option(
        "--adapter",
        "adapters",
        type=click.Path(path_type=Path),
        multiple=True,
        help="A peft (LoRA) adapter directory to load on top of --model; repeat it for one run "
        "per adapter on one loaded base.",
    )(fn)
    fn = click.option(
        "--model",
        "model_path",
        default="default",
        show_default=True,
        help="Model directory, or 'default' (SmolLM2-135M-Instruct, converted offline on first use).",
    )(fn)
    return fn


def ray_options(fn: Any) -> Any:
    """--ray / --ray-address / --workers: generate on a Ray cluster (the `ray` extra)."""
    fn = click.option(
        "--workers",
        type=click.IntRange(min=1),
        default=None,
        help="Ray workers, each with its own copy of the model (default: one per GPU, "
        "else one per CPU of the cluster).",
    )(fn)
    fn = click.option(
        "--ray-address",
        metavar="ADDRESS",
        default=None,
        help="Join an existing Ray cluster ('auto', or HOST:PORT of `ray start --head`) "
        "instead of starting one on this machine.  [default: $RAY_ADDRESS if set]",
    )(fn)
    fn = click.option(
        "--ray",
        "use_ray",
        is_flag=True,
        help="Generate on Ray workers (data-parallel); results go to the same store, "
        "identical to a single-process run. Needs: pip install 'harness-loop[ray]'.",
    )(fn)
    return fn


def ray_executor(plugins: Any, use_ray: bool, address: str | None, workers: int | None) -> Any:
    """A RayExecutor for --ray, else None; --ray-address and --workers need --ray."""
    if not use_ray:
        given = [flag for flag, value in (("--ray-address", address), ("--workers", workers)) if value]
        if given:
            raise ConfigError(f"{' and '.join(given)} only apply with --ray; add --ray")
        return None
    from harness.distributed import RayExecutor

    return RayExecutor(plugins, address=address, workers=workers)


@click.command("eval", context_settings=CONTEXT_SETTINGS)
@click.argument("suite")
@model_options
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N samples.")
@click.option("--seed", type=int, help="Override the suite's generation seed.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), help="Override the suite's max_new_tokens.")
@click.option("--label", help="A note stored with the run (shown by `harness runs`).")
@click.option("--new", "new_run", is_flag=True, help="Start a new run even if an identical one was interrupted.")
@click.option(
    "--commit-every",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Commit generations to the store every N prompts (the most an interruption loses).",
)
@click.option("--report/--no-report", default=True, show_default=True, help="Print the run report at the end.")
@click.option(
    "--check-targets",
    is_flag=True,
    help="Exit with code 1 if a metric misses the target its suite sets.",
)
@ray_options
@pass_state
def eval_command(
    state: CliState,
    suite: str,
    model_path: str,
    adapters: tuple[Path, ...],
    backend: str,
    backend_options: tuple[str, ...],
    limit: int | None,
    seed: int | None,
    max_new_tokens: int | None,
    label: str | None,
    new_run: bool,
    commit_every: int,
    report: bool,
    check_targets: bool,
    use_ray: bool,
    ray_address: str | None,
    workers: int | None,
) -> None:
    """Evaluate SUITE (a built-in suite's name, or a suite.yaml path) against a checkpoint.

    \b
    Examples:
      harness eval dictionary --model default --limit 50
      harness eval ./my-suite/suite.yaml --model ./merged
      harness eval numbers --model base/ --adapter out/adapter -o batch_size=16
      harness eval dictionary --model default --adapter it1/adapter --adapter it2/adapter
      harness eval dictionary --model default --ray --ray-address auto --workers 8

    Generations are cached by checkpoint, prompt and parameters: evaluating an unchanged
    checkpoint again generates nothing, and an interrupted run resumes where it stopped.
    Several --adapter make one run per adapter, in order, on a base loaded once.
    Exit code: 0 done, 1 done but a plugin failed (or --check-targets missed), 2 bad input.
    """
    from harness.evaluate import EvalOptions, evaluate, evaluate_adapters
    from harness.progress import RichReporter
    from harness.suite import load_suite
    from harness.types import ModelSpec

    loaded = load_suite(suite)
    plugins = state.load_plugins(loaded.plugin_files)
    spec = ModelSpec(
        path=model_path,
        adapter=str(adapters[0]) if len(adapters) == 1 else None,
        backend=backend,
        options=parse_options(backend_options, "--backend-option"),
    )
    # Connect to Ray before the store is touched: a bad address leaves no run behind.
    executor = ray_executor(plugins, use_ray, ray_address, workers)
    options = EvalOptions(
        limit=limit,
        seed=seed,
        max_new_tokens=max_new_tokens,
        label=label,
        resume=not new_run,
        chunk_size=commit_every,
        executor=executor,
    )
    reporter = RichReporter(state.err)
    with executor or nullcontext(), state.writer() as store:
        if len(adapters) > 1:
            summaries = evaluate_adapters(
                loaded, spec, [str(a) for a in adapters], store, plugins, options, reporter=reporter
            )
        else:
            summaries = [evaluate(loaded, spec, store, plugins, options, reporter=reporter)]
    exit_code = 0
    names = adapters if len(adapters) > 1 else (None,)
    for summary, adapter in zip(summaries, names):
        exit_code = max(exit_code, _finish_run(state, summary, adapter, plugins, report, check_targets))
    raise SystemExit(exit_code)


def _finish_run(
    state: CliState, summary: Any, adapter: Path | None, plugins: Any, report: bool, check_targets: bool
) -> int:
    """Print one run's line (and report); its exit code."""
    state.err.print(
        f"run [bold]{summary.run_id}[/]"
        + (f" ({adapter})" if adapter else "")
        + f": {summary.n_samples} samples, {summary.generated} generated, {summary.cached} from cache"
        + (" (resumed)" if summary.resumed else ""),
        highlight=False,
    )
    if report:
        from harness.reporting import show_report

        with state.reader() as store:
            show_report(store, "run", console=state.console, plugins=plugins, run=summary.run_id)
    exit_code = 0
    if summary.errors:
        state.err.print(
            f"[bold red]{len(summary.errors)} plugin error(s)[/] were recorded against run "
            f"{summary.run_id}; `harness show {summary.run_id}` lists them",
            highlight=False,
        )
        exit_code = 1
    if check_targets and any(c["passed"] is False for c in summary.corpus.values()):
        missed = [name for name, c in summary.corpus.items() if c["passed"] is False]
        state.err.print(f"[bold red]missed target[/]: {', '.join(missed)}", highlight=False)
        exit_code = 1
    return exit_code


@click.command("runs", context_settings=CONTEXT_SETTINGS)
@click.option("--suite", help="Only runs of this suite.")
@click.option("-n", "--limit", default=20, show_default=True, help="How many runs (newest first).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_state
def runs_command(state: CliState, suite: str | None, limit: int, as_json: bool) -> None:
    """List evaluation runs, newest first."""
    with state.reader() as store:
        rows = store.query(
            """
            SELECT r.run_id, r.suite_name, r.suite_version, r.model_path, r.adapter_path, r.status,
                   r.n_samples, r.main_metric, c.value AS main_value, r.label, r.started_at,
                   epoch(r.finished_at) - epoch(r.started_at) AS seconds,
                   (SELECT count(*) FROM failures f WHERE f.run_id = r.run_id) AS failures
            FROM runs r
            LEFT JOIN corpus_scores c ON c.run_id = r.run_id AND c.metric = r.main_metric
            WHERE ? IS NULL OR r.suite_name = ?
            ORDER BY r.run_id DESC LIMIT ?
            """,
            [suite, suite, limit],
        )
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        state.console.print("no runs yet: try `harness eval dictionary --model default`")
        return
    table = Table(title="runs", title_justify="left")
    for column in ("id", "suite", "model", "status", "n", "main metric", "failing", "started", "time"):
        table.add_column(column, justify="right" if column in ("id", "n", "failing", "time") else "left")
    for row in rows:
        model = Path(row["model_path"]).name + (f" + {Path(row['adapter_path']).name}" if row["adapter_path"] else "")
        value = f"{row['main_metric']} {row['main_value']:.3g}" if row["main_value"] is not None else "-"
        status_style = {"completed": "green", "completed_with_errors": "yellow"}.get(row["status"], "red")
        table.add_row(
            str(row["run_id"]),
            f"{row['suite_name']} v{row['suite_version']}",
            model + (f"  [dim]{row['label']}[/]" if row["label"] else ""),
            f"[{status_style}]{row['status']}[/]",
            str(row["n_samples"]),
            value,
            str(row["failures"]),
            row["started_at"].strftime("%Y-%m-%d %H:%M"),
            f"{row['seconds']:.0f}s" if row["seconds"] is not None else "-",
        )
    state.console.print(table)


@click.command("plugins", context_settings=CONTEXT_SETTINGS)
@click.option("--kind", help="Only this kind (metric, detector, backend, trainer, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_state
def plugins_command(state: CliState, kind: str | None, as_json: bool) -> None:
    """List every registered component: kind, name, source plugin and version."""
    from harness.components import COMPONENT_KINDS

    if kind:
        kind = kind.replace("-", "_")
        if kind not in COMPONENT_KINDS:
            raise ConfigError(f"unknown kind {kind!r}; kinds: {', '.join(COMPONENT_KINDS)}")
    entries = state.load_plugins().registry.entries(kind)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "kind": e.kind,
                        "name": e.name,
                        "plugin": e.plugin.name,
                        "source": e.plugin.source,
                        "version": e.plugin.version,
                        "description": e.description,
                    }
                    for e in entries
                ],
                indent=2,
            )
        )
        return
    table = Table(title="components", title_justify="left")
    for column in ("kind", "name", "plugin", "source", "version"):
        table.add_column(column, no_wrap=column in ("kind", "name"))
    table.add_column("description", ratio=1, overflow="fold")
    for e in entries:
        table.add_row(e.kind, e.name, e.plugin.name, e.plugin.source, e.plugin.version, e.description)
    state.console.print(table)


def register(group: click.Group) -> None:
    for command in (eval_command, runs_command, plugins_command):
        group.add_command(command)
