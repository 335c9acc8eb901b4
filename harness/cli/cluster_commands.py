"""`harness clusters RUN`: group a run's failures and show the groups."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from harness.cli.common import CONTEXT_SETTINGS, CliState, pass_state
from harness.cli.eval_commands import parse_options
from harness.cli.params import NON_NEGATIVE


@click.command("clusters", context_settings=CONTEXT_SETTINGS)
@click.argument("run")
@click.option("--featurizer", default="embedding", show_default=True, help="embedding (MiniLM) or tfidf.")
@click.option("-f", "--featurizer-arg", "featurizer_args", multiple=True, metavar="KEY=VALUE", help="Featurizer argument.")
@click.option("--clusterer", default="agglomerative", show_default=True, help="agglomerative or hdbscan.")
@click.option("-c", "--clusterer-arg", "clusterer_args", multiple=True, metavar="KEY=VALUE", help="Clusterer argument, e.g. min_cluster_size=8.")
@click.option("--previous", type=int, help="Match against this clustering id (e.g. the last iteration's).")
@click.option("--recluster", is_flag=True, help="Cluster again even if the run already has clusters.")
@click.option("--examples", default=2, show_default=True, type=NON_NEGATIVE, help="Examples shown per cluster.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@pass_state
def clusters_command(
    state: CliState,
    run: str,
    featurizer: str,
    featurizer_args: tuple[str, ...],
    clusterer: str,
    clusterer_args: tuple[str, ...],
    previous: int | None,
    recluster: bool,
    examples: int,
    as_json: bool,
) -> None:
    """Group the failing samples of RUN (an id or 'latest') into clusters, label them
    (distinctive terms, dominant issue, tags) and show them with examples.

    The first call clusters and stores the result; later calls show it (use
    --recluster, or other --featurizer/--clusterer settings, to cluster again).
    """
    from harness.cluster.clustering import cluster_run, latest_clustering, load_clusters
    from harness.store.clusters import cluster_changes, clustering_record
    from harness.store.queries import Queries
    from harness.store.runs import sample_outputs

    with state.writer() as store:
        run_id = Queries(store).resolve(run)
        existing = latest_clustering(store, run_id)
        asked_for_new = recluster or featurizer_args or clusterer_args or previous is not None
        if existing is None or asked_for_new:
            with state.err.status("clustering failures..."):
                result = cluster_run(
                    store,
                    run_id,
                    state.load_plugins().registry,
                    featurizer=featurizer,
                    featurizer_args=parse_options(featurizer_args, "--featurizer-arg"),
                    clusterer=clusterer,
                    clusterer_args=parse_options(clusterer_args, "--clusterer-arg"),
                    previous_clustering=previous,
                )
            clustering_id = result.clustering_id
        else:
            clustering_id = existing
        clusters = load_clusters(store, clustering_id)
        info = clustering_record(store, clustering_id)
        changes = cluster_changes(store, clustering_id)
        sample_ids = sorted({m for c in clusters for m in c.examples[:examples]})
        texts = {row["sample_id"]: row for row in sample_outputs(store, run_id, sample_ids)}

    if as_json:
        click.echo(json.dumps(_as_json(run_id, info, clusters, changes, texts, examples), indent=2, default=str))
        return
    console = state.console
    console.print(
        f"[bold]run {run_id}[/]: {info['n_failures']} failing samples in {info['n_clusters']} clusters"
        + (f", {info['unclustered']} unclustered" if info["unclustered"] else "")
        + f"  [dim](clustering {clustering_id}: {info['featurizer']} + {info['clusterer']})[/]",
        highlight=False,
    )
    table = Table(show_lines=False, title_justify="left")
    table.add_column("id", justify="right")
    table.add_column("size", justify="right")
    table.add_column("label", ratio=1, overflow="fold")
    table.add_column("mean score", justify="right")
    for c in clusters:
        score = f"{c.score_metric} {c.mean_score:.1f}" if c.mean_score is not None else "-"
        table.add_row(str(c.id), str(c.size), escape(c.label), score)
    console.print(table)
    for c in clusters:
        if c.id == -1 or not c.examples:
            continue
        lines = []
        for sample_id in c.examples[:examples]:
            row = texts.get(sample_id)
            if row:
                lines.append(
                    f"[bold]{escape(sample_id)}[/] [dim]input[/] {escape(row['input'][:80])}\n"
                    f"  [dim]output[/] {escape(row['text'][:160])}\n"
                    f"  [dim]reference[/] {escape((row['refs'] or [''])[0][:160])}"
                )
        console.print(Panel("\n".join(lines), title=f"cluster {c.id}: {escape(c.label)}", title_align="left"))
    if changes:
        console.print(f"[bold]changes since clustering {info['previous_clustering']}[/]")
        moved = Table()
        for column in ("previous", "now", "change", "size before", "still failing", "size now"):
            moved.add_column(column, justify="right" if column != "change" else "left")
        for ch in changes:
            moved.add_row(
                _cell(ch["previous_cluster"]), _cell(ch["cluster_id"]), ch["change"],
                _cell(ch["previous_size"]), _cell(ch["still_failing"]), _cell(ch["size"]),
            )
        console.print(moved)


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _as_json(run_id: int, info: dict, clusters: list, changes: list, texts: dict, examples: int) -> dict:
    return {
        "run_id": run_id,
        "clustering_id": info["clustering_id"],
        "featurizer": info["featurizer"],
        "clusterer": info["clusterer"],
        "clusters": [
            {
                "id": c.id,
                "size": c.size,
                "label": c.label,
                "top_terms": list(c.top_terms),
                "dominant_issue": c.dominant_issue,
                "tags": list(c.tags),
                "mean_score": c.mean_score,
                "score_metric": c.score_metric,
                "members": list(c.members),
                "examples": [
                    {"sample_id": s, "input": texts[s]["input"], "output": texts[s]["text"]}
                    for s in c.examples[:examples]
                    if s in texts
                ],
            }
            for c in clusters
        ],
        "changes": changes,
    }


def register(group: click.Group) -> None:
    group.add_command(clusters_command)
