"""`harness data`: build, export, import and inspect training datasets."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from harness.cli.common import CONTEXT_SETTINGS, CliState, pass_state
from harness.cli.params import OUTPUT_FILE, SEED


@click.group("data", context_settings=CONTEXT_SETTINGS)
def data_group() -> None:
    """Training data aimed at a run's clusters of failures: build, export for annotation,
    import corrections, inspect.

    \b
    Examples:
      harness data add latest --source pool --budget 200
      harness data add latest --budget 200 --selection random        the baseline
      harness data export latest --cluster 0 --format csv
      harness data import run3-cluster0.csv --parent 1a2b3c
      harness data list
    """


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items()) or "none"


def _print_manifest(state: CliState, manifest: Any) -> None:
    state.err.print(
        f"dataset [bold]{manifest.hash[:12]}[/]: {manifest.n_rows} rows "
        f"({manifest.n_added} new, {manifest.selection}"
        + (f", parent {manifest.parent[:12]}" if manifest.parent else "")
        + ")",
        highlight=False,
    )
    state.err.print(f"  added by source: {_counts(manifest.sources)}", highlight=False)
    state.err.print(f"  added by cluster: {_counts(manifest.cluster_counts)}", highlight=False)
    state.err.print(f"  dropped: {_counts(manifest.dropped)}", highlight=False)
    suites = ", ".join(s["name"] for s in manifest.decontaminated_against)
    state.err.print(f"  decontaminated against: {suites}", highlight=False)
    if manifest.eval_items:
        state.err.print(
            f"  [yellow]{len(manifest.eval_items)} row(s) are corrections of eval items[/]: scores on "
            "those samples stop measuring generalisation once they are trained on",
            highlight=False,
        )
    state.err.print(f"  file: {manifest.path}", highlight=False, soft_wrap=True)
    click.echo(manifest.hash)


def clustering_options(fn: Any) -> Any:
    """--featurizer / --clusterer: used only when the run has no clustering yet."""
    fn = click.option(
        "--clusterer",
        default="agglomerative",
        show_default=True,
        help="Clusterer, if the run must be clustered first.",
    )(fn)
    return click.option(
        "--featurizer",
        default="embedding",
        show_default=True,
        help="Featurizer, if the run must be clustered first.",
    )(fn)


@data_group.command("add", context_settings=CONTEXT_SETTINGS)
@click.argument("run")
@click.option(
    "--source",
    default="pool",
    show_default=True,
    help="Data source plugin (pool, augment, teacher, annotate, ...).",
)
@click.option(
    "--budget",
    required=True,
    type=click.IntRange(min=1),
    help="New rows to add, split across clusters by size.",
)
@click.option(
    "--selection",
    type=click.Choice(["targeted", "random", "random_on_task"]),
    default="targeted",
    show_default=True,
    help="random: a seeded uniform draw of the same size from the pool (the baseline); random_on_task: "
    "the same among the pool rows of the suite's own task (with --source augment: untargeted augmentation).",
)
@click.option("--parent", help="Hash (or unique prefix) of the dataset to grow; its rows come first.")
@click.option(
    "--clustering", "clustering_id", type=int, help="Clustering of the run to use (default: its latest)."
)
@click.option(
    "-a",
    "--source-arg",
    "source_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Argument of the source, repeatable (pool: path, candidate_factor, ranking, ...).",
)
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seed of every random choice.")
@click.option(
    "--against",
    "suites_against",
    multiple=True,
    metavar="SUITE",
    help="Eval suite to decontaminate against, repeatable (default: the run's suite and every built-in suite).",
)
@click.option(
    "--output", type=OUTPUT_FILE, help="Where to write the dataset JSONL."
)
@clustering_options
@pass_state
def add_command(
    state: CliState,
    run: str,
    source: str,
    budget: int,
    selection: str,
    parent: str | None,
    clustering_id: int | None,
    source_args: tuple[str, ...],
    seed: int,
    suites_against: tuple[str, ...],
    output: Path | None,
    featurizer: str,
    clusterer: str,
) -> None:
    """Add BUDGET rows aimed at RUN's clusters of failures (RUN: an id, 'latest' or 'latest~N').

    The run is clustered first if it has no clustering. New rows are deduplicated
    (within themselves and against --parent) and decontaminated against the eval suites
    before they are added; the new dataset's hash is printed on standard output.
    """
    from harness.cli.eval_commands import parse_options
    from harness.cluster.clustering import cluster_run, latest_clustering, load_failures
    from harness.data.datasets import build_dataset, eval_suites, load_run_suite, prepare_source
    from harness.data.manifests import load_manifest
    from harness.errors import HarnessError
    from harness.progress import RichReporter
    from harness.store.queries import Queries

    args = parse_options(source_args, "--source-arg")
    with state.writer() as store:
        run_id = Queries(store).resolve(run)
        suite, run_suites = load_run_suite(store, run_id)
        plugins = state.load_plugins(suite.plugin_files)
        if clustering_id is None and latest_clustering(store, run_id) is None:
            # Check everything that can be checked before the clustering is stored.
            if not load_failures(store, run_id):
                raise HarnessError(
                    f"run {run_id} has no failing samples: there is nothing to aim training data at"
                )
            prepare_source(plugins.registry, source, args, selection, suite)
            eval_suites(run_suites, list(suites_against) or None)
            if parent:
                load_manifest(store, parent)
            state.err.print(f"run {run_id} has no clustering yet: clustering its failures", highlight=False)
            clustered = cluster_run(
                store, run_id, plugins.registry, featurizer=featurizer, clusterer=clusterer
            )
            clustering_id = clustered.clustering_id
            state.err.print(
                f"clustering {clustering_id}: {len(clustered.clusters)} group(s) of failures", highlight=False
            )
        manifest = build_dataset(
            store,
            run_id,
            clustering_id,
            plugins,
            source=source,
            source_args=args,
            budget=budget,
            selection=selection,
            parent=parent,
            seed=seed,
            suites_against=list(suites_against) or None,
            output=output,
            reporter=RichReporter(state.err),
        )
    _print_manifest(state, manifest)


@data_group.command("export", context_settings=CONTEXT_SETTINGS)
@click.argument("run")
@click.option(
    "--cluster", "cluster_id", required=True, type=int, help="Cluster id (-1: the unclustered failures)."
)
@click.option("--clustering", "clustering_id", type=int, help="Clustering of the run (default: its latest).")
@click.option("--format", "format_", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option(
    "--output",
    type=OUTPUT_FILE,
    help="File to write (default: ./run<RUN>-cluster<K>.<format>).",
)
@clustering_options
@pass_state
def export_command(
    state: CliState,
    run: str,
    cluster_id: int,
    clustering_id: int | None,
    format_: str,
    output: Path | None,
    featurizer: str,
    clusterer: str,
) -> None:
    """Write a cluster's failing samples for people to correct.

    Fill in the corrected_output column (delete rows you skip), then
    `harness data import FILE` adds the corrections as training rows.
    """
    from harness.cluster.clustering import cluster_run, latest_clustering
    from harness.data.annotation import export_annotations
    from harness.store.queries import Queries

    with state.writer() as store:
        run_id = Queries(store).resolve(run)
        if clustering_id is None and latest_clustering(store, run_id) is None:
            state.err.print(f"run {run_id} has no clustering yet: clustering its failures", highlight=False)
            clustering_id = cluster_run(
                store, run_id, state.load_plugins().registry, featurizer=featurizer, clusterer=clusterer
            ).clustering_id
        path, count = export_annotations(
            store, run_id, cluster_id, clustering_id=clustering_id, format=format_, output=output
        )
    state.err.print(
        f"wrote {count} failing sample(s) of cluster {cluster_id} to {path}: fill in corrected_output, "
        f"then `harness data import {path}`",
        highlight=False,
    )


@data_group.command("import", context_settings=CONTEXT_SETTINGS)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--run", help="The run the file was exported from (default: the newest run holding its samples)."
)
@click.option("--parent", help="Hash (or unique prefix) of the dataset to grow.")
@click.option(
    "--against",
    "suites_against",
    multiple=True,
    metavar="SUITE",
    help="Eval suite to decontaminate against (repeatable).",
)
@click.option(
    "--output", type=OUTPUT_FILE, help="Where to write the dataset JSONL."
)
@pass_state
def import_command(
    state: CliState,
    file: Path,
    run: str | None,
    parent: str | None,
    suites_against: tuple[str, ...],
    output: Path | None,
) -> None:
    """Import a corrected annotation FILE (.csv or .jsonl) as training rows.

    Every row is validated first (columns, an empty corrected_output, unknown sample
    ids); one bad row and nothing is imported.
    """
    from harness.data.annotation import import_annotations
    from harness.store.queries import Queries

    with state.writer() as store:
        run_id = Queries(store).resolve(run) if run else None
        manifest = import_annotations(
            store,
            file,
            run_id=run_id,
            parent=parent,
            suites_against=list(suites_against) or None,
            output=output,
        )
    _print_manifest(state, manifest)


@data_group.command("show", context_settings=CONTEXT_SETTINGS)
@click.argument("dataset", default="latest")
@click.option(
    "--rows", "n_rows", default=10, show_default=True, type=click.IntRange(min=0), help="New rows to print."
)
@click.option("--json", "as_json", is_flag=True, help="Print the manifest (and every row) as JSON.")
@pass_state
def show_command(state: CliState, dataset: str, n_rows: int, as_json: bool) -> None:
    """Show a dataset's manifest and its first new rows (DATASET: hash, prefix or 'latest')."""
    from harness.data.manifests import load_manifest, row_record

    with state.reader() as store:
        manifest = load_manifest(store, dataset)
    if as_json:
        info = {
            "hash": manifest.hash,
            "parent": manifest.parent,
            "run_id": manifest.run_id,
            "clustering_id": manifest.clustering_id,
            "selection": manifest.selection,
            "n_rows": manifest.n_rows,
            "n_added": manifest.n_added,
            "sources": manifest.sources,
            "cluster_counts": manifest.cluster_counts,
            "dropped": manifest.dropped,
            "decontaminated_against": list(manifest.decontaminated_against),
            "eval_items": manifest.eval_items,
            "path": manifest.path,
            "created_at": str(manifest.created_at),
            "rows": [row_record(r) for r in manifest.rows],
        }
        click.echo(json.dumps(info, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"dataset {manifest.hash}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for field, value in (
        ("rows", f"{manifest.n_rows} ({manifest.n_added} new)"),
        ("selection", manifest.selection),
        ("parent", manifest.parent or "-"),
        (
            "run / clustering",
            f"{manifest.run_id} / {manifest.clustering_id if manifest.clustering_id is not None else '-'}",
        ),
        ("added by source", _counts(manifest.sources)),
        ("added by cluster", _counts(manifest.cluster_counts)),
        ("dropped", _counts(manifest.dropped)),
        (
            "decontaminated against",
            ", ".join(f"{s['name']} ({s['hash'][:12]})" for s in manifest.decontaminated_against),
        ),
        ("eval items (corrections)", ", ".join(manifest.eval_items) or "-"),
        ("file", manifest.path or "-"),
        ("created", str(manifest.created_at)),
    ):
        table.add_row(field, value)
    state.console.print(table)
    if n_rows and manifest.n_added:
        rows = Table(title="new rows", title_justify="left")
        for column in ("cluster", "source", "input", "output", "from"):
            rows.add_column(column, overflow="fold")
        for row in manifest.added[:n_rows]:
            origin = {
                k: v
                for k, v in row.provenance.items()
                if k in ("pool", "line", "teacher", "seed_sample", "file", "transform", "similarity")
            }
            rows.add_row(
                str(row.cluster),
                row.source,
                (row.input or row.instruction)[:80],
                row.output[:120],
                ", ".join(f"{k}={v}" for k, v in origin.items()),
            )
        state.console.print(rows)


@data_group.command("list", context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@pass_state
def list_command(state: CliState, as_json: bool) -> None:
    """List stored datasets, newest first."""
    from harness.data.manifests import list_manifests

    with state.reader() as store:
        manifests = list_manifests(store)
    if as_json:
        click.echo(json.dumps(manifests, default=str, indent=2))
        return
    if not manifests:
        state.console.print("no datasets yet: `harness data add RUN --budget N` builds one")
        return
    table = Table(title="datasets", title_justify="left")
    for column in ("hash", "parent", "run", "selection", "rows", "new", "sources", "dropped", "created"):
        table.add_column(column, justify="right" if column in ("run", "rows", "new") else "left")
    for m in manifests:
        table.add_row(
            m["manifest_hash"][:12],
            (m["parent_hash"] or "-")[:12],
            str(m["run_id"]) if m["run_id"] is not None else "-",
            m["selection"],
            str(m["n_rows"]),
            str(m["n_added"]),
            _counts(m["sources"]),
            str(sum(m["dropped"].values())),
            m["created_at"].strftime("%Y-%m-%d %H:%M"),
        )
    state.console.print(table)


def register(group: click.Group) -> None:
    group.add_command(data_group)
