"""`harness eval`, `harness runs`, `harness plugins`."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import click
import yaml
from rich import box
from rich.table import Table

from harness.cli.common import CONTEXT_SETTINGS, CliState, pass_state
from harness.cli.params import COUNT, SEED
from harness.errors import ConfigError
from harness.types import DEFAULT_CHUNK, MAX_NEW_TOKENS


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
    from harness.generate.ray import RayExecutor

    return RayExecutor(plugins, address=address, workers=workers)


@click.command("eval", context_settings=CONTEXT_SETTINGS)
@click.argument("suite")
@model_options
@click.option(
    "--split",
    help="Evaluate only this split of the suite (e.g. dev or test); default: every sample.",
)
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N samples.")
@click.option("--seed", type=SEED, help="Override the suite's generation seed.")
@click.option(
    "--max-new-tokens",
    type=click.IntRange(min=1, max=MAX_NEW_TOKENS),
    help="Override the suite's max_new_tokens (at most the model's context).",
)
@click.option("--label", help="A note stored with the run (shown by `harness runs`).")
@click.option("--new", "new_run", is_flag=True, help="Start a new run even if an identical one was interrupted.")
@click.option(
    "--commit-every",
    type=click.IntRange(min=1),
    default=DEFAULT_CHUNK,
    show_default=True,
    help="Commit generations to the store every N prompts (the most an interruption loses; also "
    "the most prompts one backend call, and so one batch, holds).",
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
    split: str | None,
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
    """Evaluate SUITE against a checkpoint. SUITE is a built-in suite's name
    (`harness eval dictionary`), a suite.yaml path, or a directory holding a suite.yaml.

    \b
    Examples:
      harness eval dictionary --model default --limit 50
      harness eval dictionary --model default --split test
      harness eval ./my-suite/suite.yaml --model ./merged
      harness eval numbers --model base/ --adapter out/adapter -o batch_size=16
      harness eval dictionary --model default --adapter it1/adapter --adapter it2/adapter
      harness eval dictionary --model default --ray --ray-address auto --workers 8

    Generations are cached by checkpoint, prompt and parameters: evaluating an unchanged
    checkpoint again generates nothing, and an interrupted run resumes where it stopped.
    Several --adapter make one run per adapter, in order, on a base loaded once.
    Exit code: 0 done, 1 done but a plugin failed (or --check-targets missed), 2 bad input.
    """
    from harness.progress import RichReporter
    from harness.score.evaluate import EvalOptions, evaluate, evaluate_adapters
    from harness.suite.load import load_suite
    from harness.types import ModelSpec

    loaded = load_suite(suite)
    if split is not None:
        loaded = loaded.split(split)
        if loaded.auto_split:
            state.err.print(f"split {split!r} of {loaded.name}: {loaded.describe_split()}", highlight=False)
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
        from harness.report.show import show_report

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
@click.option("-n", "--limit", default=20, show_default=True, type=COUNT, help="How many runs (newest first).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_state
def runs_command(state: CliState, suite: str | None, limit: int, as_json: bool) -> None:
    """List evaluation runs, newest first."""
    from harness.store.queries import Queries

    with state.reader() as store:
        rows = Queries(store).run_rows(suite=suite, limit=limit)
    if as_json:
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        state.console.print("no runs yet: try `harness eval dictionary --model default`")
        return
    # Readable at 80 columns: light borders, short status words and dates; only the
    # model column wraps.
    table = Table(
        title="runs", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    for column in ("id", "suite", "model", "status", "n", "score", "fail", "started", "time"):
        table.add_column(
            column,
            justify="right" if column in ("id", "n", "fail", "time") else "left",
            no_wrap=column != "model",
            ratio=1 if column == "model" else None,
            min_width=12 if column == "model" else None,
            overflow="fold",
        )
    for row in rows:
        model = Path(row["model_path"]).name + (f" + {Path(row['adapter_path']).name}" if row["adapter_path"] else "")
        value = f"{row['main_metric']} {row['main_value']:.3g}" if row["main_value"] is not None else "-"
        status, style = _RUN_STATUS.get(row["status"], (row["status"], "red"))
        table.add_row(
            str(row["run_id"]),
            f"{row['suite_name']} v{row['suite_version']}" + (f" [cyan]{row['split']}[/]" if row["split"] else ""),
            model + (f" [dim]{row['label']}[/]" if row["label"] else ""),
            f"[{style}]{status}[/]",
            str(row["n_samples"]),
            value,
            str(row["failures"]),
            row["started_at"].strftime("%m-%d %H:%M"),
            _seconds(row["seconds"]),
        )
    state.console.print(table)


@click.command("plugins", context_settings=CONTEXT_SETTINGS)
@click.option("--kind", help="Only this kind (metric, detector, backend, trainer, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_state
def plugins_command(state: CliState, kind: str | None, as_json: bool) -> None:
    """List every registered component: kind, name, source plugin and version."""
    from harness.components.contracts import COMPONENT_KINDS

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
    # One table per kind, the plugin it comes from under the description: at 80 columns
    # names stay whole and descriptions wrap at words.
    for kind_name in dict.fromkeys(e.kind for e in entries):
        table = Table(
            title=f"{kind_name}s", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
            show_header=False,
        )
        table.add_column("name", no_wrap=True, style="bold")
        table.add_column("description", ratio=1)
        for e in (e for e in entries if e.kind == kind_name):
            table.add_row(e.name, f"{e.description}\n[dim]{_origin(e.plugin)}[/]")
        state.console.print(table)


_RUN_STATUS = {
    "completed": ("done", "green"),
    "completed_with_errors": ("errors", "yellow"),
    "running": ("running", "cyan"),
    "failed": ("failed", "red"),
}


def _seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f}s" if seconds < 600 else f"{seconds / 60:.0f}m"


def _origin(plugin: Any) -> str:
    """Where a component comes from, briefly: 'builtin', or the plugin, version and source."""
    if plugin.source == "builtin":
        return f"builtin ({plugin.name.removeprefix('harness.')})"
    return f"{plugin.name} {plugin.version} · {plugin.source}"


@click.command("validate", context_settings=CONTEXT_SETTINGS)
@click.argument("suite")
@pass_state
def validate_command(state: CliState, suite: str) -> None:
    """Check SUITE without loading a model: the suite file, its data (and pool), its
    plugin files, and every metric's and detector's name and arguments. SUITE is a
    built-in suite's name, a suite.yaml path or a directory holding one.

    A mistake prints one line, `suite.yaml:LINE: field: what is wrong`, and exits 2.
    """
    from harness.score.scoring import resolve_components
    from harness.suite.files import read_training_rows
    from harness.suite.load import load_suite

    loaded = load_suite(suite)
    plugins = state.load_plugins(loaded.plugin_files)
    components = resolve_components(loaded, plugins.registry)
    pool = loaded.pool_path
    pool_rows = None
    if pool is not None:
        if not pool.is_file():
            raise ConfigError(f"{loaded.where('pool')}: {pool} does not exist")
        pool_rows = len(read_training_rows(pool))
    state.console.print(
        f"[green]ok[/]: {loaded.name} v{loaded.version}: {len(loaded.samples)} samples, "
        f"metrics {', '.join(m.name for m in components.metrics)} (main {loaded.config.main})"
        + (f", detectors {', '.join(d.name for d in components.detectors)}" if components.detectors else "")
        + (f", pool of {pool_rows} rows" if pool_rows is not None else ""),
        highlight=False,
        soft_wrap=True,
    )


def register(group: click.Group) -> None:
    for command in (eval_command, runs_command, plugins_command, validate_command):
        group.add_command(command)
