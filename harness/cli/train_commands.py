"""`harness train`: fine-tune a checkpoint on a dataset and record the training run.

The same command runs as one process or as several (`torchrun --nproc_per_node N -m
harness train ...`, `accelerate launch -m harness train ...`). With several, only the
main process (rank 0) opens the store: it resolves the dataset, checks the arguments,
records the run, and hands the rows to the other processes, which only train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from harness.cli.common import CONTEXT_SETTINGS, CliState, pass_state
from harness.cli.eval_commands import parse_options
from harness.cli.params import OUTPUT_DIR
from harness.errors import ConfigError, HarnessError, NotFoundError
from harness.types import ModelSpec, TrainingExample

_FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json")


@dataclass(frozen=True)
class _Start:
    """What the main process hands to the others before training: the rows, or the
    error that stops every process."""

    rows: tuple[TrainingExample, ...] = ()
    error: str | None = None


@click.command("train", context_settings=CONTEXT_SETTINGS)
@click.argument("dataset")
@click.option(
    "--model",
    default="default",
    show_default=True,
    help="Base model directory, or 'default' (SmolLM2-135M-Instruct).",
)
@click.option(
    "--adapter",
    type=click.Path(path_type=Path),
    help="Continue this adapter (adapter trainers), or merge it before training (full).",
)
@click.option(
    "-o",
    "--backend-option",
    "backend_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Model loading option kept with the checkpoint (trust_remote_code, allow_pickle).",
)
@click.option("--trainer", default="lora", show_default=True, help="lora, ia3, full, or a plugin's trainer.")
@click.option(
    "-t",
    "--trainer-arg",
    "trainer_args",
    multiple=True,
    metavar="KEY=VALUE",
    help="Trainer argument, repeatable: -t epochs=2 -t batch_size=8 -t resume=true.",
)
@click.option(
    "--global-batch",
    type=click.IntRange(min=1),
    help="Rows per optimizer step over all processes: sets gradient_accumulation_steps to "
    "N / (batch_size x processes), so the same command trains alike on 1 or 8 processes.",
)
@click.option(
    "--output",
    required=True,
    type=OUTPUT_DIR,
    help="Directory for the trained checkpoint (and the resumable checkpoints on the way).",
)
@click.option(
    "--suite",
    help="Suite whose prompt format the rows are rendered in (default: the instruction template).",
)
@pass_state
def train_command(
    state: CliState,
    dataset: str,
    model: str,
    adapter: Path | None,
    backend_options: tuple[str, ...],
    trainer: str,
    trainer_args: tuple[str, ...],
    global_batch: int | None,
    output: Path,
    suite: str | None,
) -> None:
    """Fine-tune --model on DATASET and record the training run in the store.

    DATASET is a stored dataset (its hash, a unique prefix of one, or 'latest'; see
    `harness data list`) or a JSONL file of training rows (instruction, input, output),
    which is stored as a dataset first so that the run names the rows it trained on.

    \b
    Examples:
      harness train latest --model default --output runs/lora-1
      harness train rows.jsonl --model ./base -t epochs=2 -t batch_size=8 --output runs/a
      torchrun --nproc_per_node 4 -m harness train 1a2b3c --model ./base \\
          -t batch_size=8 --global-batch 64 --output runs/b
      accelerate launch --config_file docs/accelerate/fsdp.yaml -m harness train \\
          1a2b3c --model ./base --trainer full --output runs/c

    Several processes: each trains on its share of every global batch; only the main
    process reads and writes the store. Continue an interrupted training with the same
    command and -t resume=true.
    """
    from harness.suite.load import load_suite
    from harness.suite.prompts import PromptConfig
    from harness.train import check_launch, distributed_state, is_main_process, process_count

    main = is_main_process()
    processes = process_count()
    try:
        # Every process checks the command line alike, so a mistake stops them all at once.
        check_launch()
        plugins = state.load_plugins()
        component = plugins.registry.trainer(trainer, where="--trainer")
        args = _trainer_args(
            component, parse_options(trainer_args, "--trainer-arg"), global_batch, processes
        )
        prompt = load_suite(suite).config.prompt if suite else PromptConfig()
        base = ModelSpec(
            model,
            str(adapter) if adapter else None,
            "hf",
            parse_options(backend_options, "--backend-option"),
        )
    except HarnessError:
        if main:
            raise
        click.get_current_context().exit(2)  # the main process prints the error, once
    output = output.expanduser().resolve()
    if processes > 1:
        distributed_state()  # the process group the rows travel over, and training later

    if not main:
        start = _receive_start()
        if start.error is not None:
            click.get_current_context().exit(2)
        try:
            _train(component, base, list(start.rows), output, args, prompt, progress=None)
        except HarnessError:
            click.get_current_context().exit(2)  # every process stops alike; the main one says why
        return

    try:
        store = state.writer()  # held until the run is recorded: nothing can take it meanwhile
    except BaseException as exc:
        _send_start(_Start(error=str(exc)), processes)
        raise
    with store:
        try:
            rows, manifest_hash, base_hash = _prepare_start(store, dataset, base, output, args)
        except BaseException as exc:
            _send_start(_Start(error=str(exc)), processes)
            raise
        _send_start(_Start(rows=tuple(rows)), processes)
        _train_and_record(
            state, store, component, base, base_hash, manifest_hash, rows, output, args, prompt
        )


def _trainer_args(
    component: Any, raw: dict[str, Any], global_batch: int | None, processes: int
) -> Any:
    """The trainer's validated arguments; with --global-batch, the accumulation steps that
    make batch_size x processes x accumulation equal to it."""
    from harness.suite.files import validate_args as validate

    where = f"trainer {component.name!r} args"
    args: Any = validate(component, raw, where)
    if global_batch is None:
        return args
    fields = type(args).model_fields
    if "batch_size" not in fields or "gradient_accumulation_steps" not in fields:
        raise ConfigError(
            f"--global-batch: trainer {component.name!r} has no batch_size and "
            "gradient_accumulation_steps arguments; leave --global-batch out"
        )
    if "gradient_accumulation_steps" in raw:
        raise ConfigError(
            "--global-batch sets gradient_accumulation_steps; give one of them, not both"
        )
    per_step = args.batch_size * processes
    if global_batch % per_step:
        raise ConfigError(
            f"--global-batch {global_batch} is not a multiple of batch_size ({args.batch_size}) "
            f"x processes ({processes}) = {per_step}; change -t batch_size or --global-batch"
        )
    return validate(component, {**raw, "gradient_accumulation_steps": global_batch // per_step}, where)


def _prepare_start(
    store: Any, dataset: str, base: ModelSpec, output: Path, args: Any
) -> tuple[list[TrainingExample], str, str]:
    """(rows, manifest hash, base checkpoint hash), after every check that could stop the
    training before it starts (so that a mistake records no training run)."""
    from harness.generate import checkpoints
    from harness.train import check_output_dir

    rows, manifest_hash = _load_dataset(store, dataset)
    model_hash = checkpoints.content_hash(checkpoints.resolve_model_dir(base.path))
    adapter_hash = (
        checkpoints.content_hash(checkpoints.resolve_adapter_dir(base.adapter))
        if base.adapter
        else None
    )
    check_output_dir(output, resume=bool(getattr(args, "resume", False)))
    return rows, manifest_hash, checkpoints.checkpoint_hash(model_hash, adapter_hash)


def _load_dataset(store: Any, dataset: str) -> tuple[list[TrainingExample], str]:
    """The rows of a stored dataset, or of a JSONL file (stored first as an imported
    dataset), and the dataset's hash."""
    from harness.data.datasets import cluster_counts
    from harness.data.manifests import (
        Manifest,
        dataset_hash,
        load_manifest_rows,
        read_dataset_file,
        resolve_manifest,
        save_manifest,
    )

    path = Path(dataset).expanduser()
    if path.is_file():
        rows = read_dataset_file(path)
        if not rows:
            raise ConfigError(f"{path} holds no training rows")
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.source] = counts.get(row.source, 0) + 1
        manifest = save_manifest(
            store,
            Manifest(
                hash=dataset_hash(rows),
                rows=tuple(rows),
                n_added=len(rows),
                selection="import",
                sources=dict(sorted(counts.items())),
                cluster_counts=cluster_counts(rows),
            ),
        )
        return list(manifest.rows), manifest.hash
    if dataset.endswith(_FILE_SUFFIXES) or "/" in dataset:
        raise NotFoundError(f"dataset file {dataset} does not exist")
    try:
        digest = resolve_manifest(store, dataset)
    except (ConfigError, NotFoundError) as exc:
        raise type(exc)(f"no file {dataset!r} here, and as a stored dataset: {exc}") from None
    return load_manifest_rows(store, digest), digest


def _send_start(start: _Start, processes: int) -> None:
    if processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list([start], from_process=0)


def _receive_start() -> _Start:
    from accelerate.utils import broadcast_object_list

    received = broadcast_object_list([None], from_process=0)[0]
    assert isinstance(received, _Start)
    return received


def _train(
    component: Any,
    base: ModelSpec,
    rows: list[TrainingExample],
    output: Path,
    args: Any,
    prompt: Any,
    progress: Any,
) -> Any:
    return component.train(base, rows, [], output, args, prompt=prompt, progress=progress)


def _train_and_record(
    state: CliState,
    store: Any,
    component: Any,
    base: ModelSpec,
    base_hash: str,
    manifest_hash: str,
    rows: list[TrainingExample],
    output: Path,
    args: Any,
    prompt: Any,
) -> None:
    from harness.progress import RichReporter
    from harness.train.runs import train_and_record

    reporter = RichReporter(state.err)
    training_id, outcome = train_and_record(
        store,
        component,
        base=base,
        base_hash=base_hash,
        rows=rows,
        output=output,
        args=args,
        prompt=prompt,
        manifest_hash=manifest_hash,
        reporter=reporter,
        total_steps=getattr(args, "max_steps", None),
    )
    if len(outcome.loss_curve) > 1:
        reporter.log(loss_line([loss for _, loss, _ in outcome.loss_curve]))
    final = outcome.loss_curve[-1][1] if outcome.loss_curve else None
    state.console.print(
        f"training {training_id}: {outcome.checkpoint.adapter or outcome.checkpoint.path} "
        f"(checkpoint {outcome.checkpoint_hash[:12]}"
        + (f", final loss {final:.4f}" if final is not None else "")
        + ")",
        highlight=False,
        soft_wrap=True,
    )


def loss_line(losses: list[float], width: int = 40) -> str:
    """The training loss as a one-line terminal plot: 'loss ▇▆▄▃▂▁ 2.013 → 1.204 (60 steps)'.

    Averaged into at most `width` bins; heights run from the lowest to the highest loss,
    so that the shape of a curve that falls from 2.0 to 1.9 still shows."""
    import numpy as np

    from harness.document import spark_string

    finite = [v for v in losses if math.isfinite(v)]
    if not finite:
        return "loss: no finite values"
    bins = [chunk for chunk in np.array_split(np.asarray(losses, dtype=float), min(width, len(losses)))]
    means = [float(np.nanmean(b)) if np.isfinite(b).any() else math.nan for b in bins]
    low, high = min(finite), max(finite)
    span = (high - low) or 1.0
    # Shifted so the lowest bin still shows as the shortest bar, not as empty.
    heights = [(m - low) / span * 7 + 1 if math.isfinite(m) else math.nan for m in means]
    return f"loss {spark_string(heights)} {losses[0]:.4g} → {losses[-1]:.4g} ({len(losses)} logged steps)"


def register(group: click.Group) -> None:
    group.add_command(train_command)
