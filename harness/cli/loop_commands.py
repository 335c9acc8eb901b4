"""`harness loop`: evaluate -> cluster -> add data -> retrain, iteration after iteration."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import click

from harness.cli.common import CONTEXT_SETTINGS, CliState, pass_state
from harness.cli.eval_commands import parse_options, ray_executor, ray_options
from harness.cli.params import OUTPUT_DIR, SEED, SIGNIFICANCE


@click.command("loop", context_settings=CONTEXT_SETTINGS)
@click.argument("suite")
@click.option("--model", default="default", show_default=True, help="Starting model directory, or 'default'.")
@click.option("--adapter", type=click.Path(path_type=Path), help="Start from this adapter on top of --model.")
@click.option("-o", "--backend-option", "backend_options", multiple=True, metavar="KEY=VALUE", help="hf backend option.")
@click.option("--iterations", default=2, show_default=True, type=click.IntRange(min=1), help="Improvement iterations after the baseline.")
@click.option("--trainer", default="lora", show_default=True, help="lora, full, ia3, or a plugin's trainer.")
@click.option("-t", "--trainer-arg", "trainer_args", multiple=True, metavar="KEY=VALUE", help="Trainer argument, e.g. epochs=2.")
@click.option("--source", default="pool", show_default=True, help="Data source: pool, augment, teacher, or a plugin's.")
@click.option("-s", "--source-arg", "source_args", multiple=True, metavar="KEY=VALUE", help="Data source argument.")
@click.option("--budget", default=200, show_default=True, type=click.IntRange(min=1), help="New training rows per iteration.")
@click.option("--selection", type=click.Choice(["targeted", "random", "random_on_task", "none"]), default="targeted",
              show_default=True,
              help="Equal-budget controls: random (rows drawn at random from the pool), random_on_task (drawn "
                   "among the rows of the suite's own task); with --source augment, untargeted augmentation; "
                   "none: no new data, retrain on --seed-data alone.")
@click.option("--seed-data", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training rows you already have (JSONL: instruction, input, output): every iteration trains "
                   "on them plus the rows the loop adds; decontaminated against the suite and the guard.")
@click.option("--retrain-from", type=click.Choice(["base", "last"]), default="base", show_default=True,
              help="base: retrain the starting model on the grown dataset; last: continue the last adapter.")
@click.option("--guard", default="general", show_default=True, help="Suite that guards against forgetting ('none' to skip).")
@click.option("--guard-metric", "guard_metrics", multiple=True, metavar="METRIC",
              help="Guard metric that must be shown non-inferior within its margin (repeatable; default: the "
                   "guard suite's main metric, perplexity for `general`).")
@click.option("--featurizer", default="embedding", show_default=True, help="Failure features: embedding or tfidf.")
@click.option("--clusterer", default="agglomerative", show_default=True, help="agglomerative or hdbscan.")
@click.option("--limit", type=click.IntRange(min=1), help="Evaluate only the first N samples of each split of the suite.")
@click.option("--guard-limit", type=click.IntRange(min=1), help="Evaluate only the first N samples of the guard suite.")
@click.option("--alpha", default=0.05, show_default=True, type=SIGNIFICANCE, help="Significance level of the decisions.")
@click.option("--seed", default=0, show_default=True, type=SEED, help="Seeds data selection, training and sampling.")
@click.option("--train-seeds", default=1, show_default=True, type=click.IntRange(min=1),
              help="Adapters trained per iteration (seeds seed, seed+1, ...): the decision counts the spread "
              "between them; costs K times the training and evaluation.")
@click.option("--fixed-iterations", is_flag=True,
              help="Run every iteration whatever the decisions (for equal-budget comparisons of selections).")
@click.option("--prices", type=click.Path(dir_okay=False, path_type=Path), envvar="HARNESS_PRICES",
              help="Price table for cost estimates (see harness/prices.yaml).")
@click.option("--output-dir", type=OUTPUT_DIR, help="Where checkpoints go (default: beside the store).")
@click.option("--report/--no-report", default=True, show_default=True, help="Print the loop's history at the end.")
@ray_options
@pass_state
def loop_command(
    state: CliState,
    suite: str,
    model: str,
    adapter: Path | None,
    backend_options: tuple[str, ...],
    iterations: int,
    trainer: str,
    trainer_args: tuple[str, ...],
    source: str,
    source_args: tuple[str, ...],
    budget: int,
    selection: str,
    seed_data: Path | None,
    retrain_from: str,
    guard: str,
    guard_metrics: tuple[str, ...],
    featurizer: str,
    clusterer: str,
    limit: int | None,
    guard_limit: int | None,
    alpha: float,
    seed: int,
    train_seeds: int,
    fixed_iterations: bool,
    prices: Path | None,
    output_dir: Path | None,
    report: bool,
    use_ray: bool,
    ray_address: str | None,
    workers: int | None,
) -> None:
    """Improve a model on SUITE: evaluate, cluster the failures, gather training data aimed
    at the clusters, retrain, evaluate again — and decide, with paired tests, whether to go
    on, stop (target met, or no significant gain), or roll back (the suite or the guard
    suite got significantly worse).

    Failures are mined on the suite's dev split only; decisions use its held-out test
    split (a suite that declares no splits is split in half by the harness, which says so).

    \b
    Examples:
      harness loop dictionary --model default
      harness loop dictionary --model default --selection random     # the baseline
      harness loop numbers-broad --selection random_on_task          # rows of the task, not aimed
      harness loop numbers --seed-data mine.jsonl                    # grow a dataset you already have
      harness loop numbers --seed-data mine.jsonl --selection none   # the no-new-data control
      harness loop numbers --model ./base --iterations 3 --budget 400 -t epochs=2
      harness loop dictionary --model default --ray --ray-address auto   # evaluations on Ray

    Every step is stored as it finishes: run the same command again to resume an
    interrupted loop. `harness history LOOP` shows a loop's iterations.
    """
    from pydantic import ValidationError

    from harness.loop.config import LoopConfig
    from harness.loop.run import run_loop
    from harness.progress import RichReporter

    try:
        config = LoopConfig(
            suite=suite,
            model=model,
            adapter=str(adapter) if adapter else None,
            backend_options=parse_options(backend_options, "--backend-option"),
            iterations=iterations,
            trainer=trainer,
            trainer_args=parse_options(trainer_args, "--trainer-arg"),
            source=source,
            source_args=parse_options(source_args, "--source-arg"),
            selection=selection,
            seed_data=str(seed_data.resolve()) if seed_data else None,
            budget=budget,
            retrain_from=retrain_from,
            guard=None if guard.lower() == "none" else guard,
            guard_metrics=list(guard_metrics) or None,
            featurizer=featurizer,
            clusterer=clusterer,
            limit=limit,
            guard_limit=guard_limit,
            alpha=alpha,
            seed=seed,
            train_seeds=train_seeds,
            fixed_iterations=fixed_iterations,
        )
    except ValidationError as exc:
        raise click.UsageError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())) from None
    plugins = state.load_plugins()
    # Connect to Ray before the store is touched: a bad address leaves no loop behind.
    executor = ray_executor(plugins, use_ray, ray_address, workers)
    with executor or nullcontext(), state.writer() as store:
        result = run_loop(
            config, store, plugins, reporter=RichReporter(state.err), output_dir=output_dir, prices=prices,
            executor=executor,
        )
    state.err.print(
        f"loop [bold]{result.loop_id}[/]: {result.stop_reason}; keeping iteration {result.final_iteration}",
        highlight=False,
    )
    if report:
        from harness.report.show import show_report

        with state.reader() as store:
            show_report(store, "history", console=state.console, loop=result.loop_id)


def register(group: click.Group) -> None:
    group.add_command(loop_command)
