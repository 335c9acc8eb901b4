"""Train and record: the one path through which `harness train` and the improvement loop
train a checkpoint and record it in the store (`harness.store.training`): started
(before it runs, so a crash leaves a trace), then completed with its outcome and loss
curves, or failed with the error that stopped it. With several training processes
only the main one records: the others never open the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel

from harness.components.contracts import Trainer
from harness.progress import Reporter
from harness.store import Store
from harness.store.training import fail_training_run, finish_training_run, start_training_run
from harness.suite.prompts import PromptConfig
from harness.types import ModelSpec, TrainingExample, TrainingOutcome


def train_and_record(
    store: Store,
    trainer: Trainer,
    *,
    base: ModelSpec,
    base_hash: str,
    rows: Sequence[TrainingExample],
    validation: Sequence[TrainingExample] = (),
    output: Path,
    args: BaseModel,
    prompt: PromptConfig,
    manifest_hash: str | None,
    reporter: Reporter,
    total_steps: int | None = None,
) -> tuple[int, TrainingOutcome]:
    """Train `base` on `rows` and record the training run; (training id, outcome).

    The prompt format is recorded with the outcome, so that the checkpoint can be
    evaluated with the format it was trained on."""
    training_id = start_training_run(
        store,
        trainer=trainer.name,
        args=args,
        manifest_hash=manifest_hash,
        base=base,
        base_hash=base_hash,
        output=output,
    )
    source = f"dataset {manifest_hash[:12]}" if manifest_hash else "the given rows"
    adapter = f" + {base.adapter}" if base.adapter else ""
    reporter.log(f"training {training_id}: {trainer.name} on {len(rows)} rows of {source} from {base.path}{adapter}")
    try:
        with reporter.task("training steps", total=total_steps) as advance:
            outcome = trainer.train(base, list(rows), list(validation), output, args, prompt=prompt, progress=advance)
    except BaseException as exc:
        fail_training_run(store, training_id, f"{type(exc).__name__}: {exc}")
        raise
    outcome = replace(outcome, details={**dict(outcome.details), "prompt": prompt.model_dump()})
    finish_training_run(store, training_id, outcome)
    processes = outcome.details.get("processes", 1)
    batch = outcome.details.get("global_batch_rows")
    reporter.log(
        f"trained {outcome.steps} steps, {outcome.tokens_trained} tokens "
        f"({outcome.tokens_per_second:.0f} tokens/s) in {outcome.wall_time_s:.0f}s on "
        f"{processes} process{'es' if processes != 1 else ''}"
        + (f", {batch} rows per step" if batch else "")
    )
    return training_id, outcome
