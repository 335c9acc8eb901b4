"""Training runs in the store: a row in `training_runs` when training starts, its outcome
and its loss curves (`training_curves`) when it ends, or the error that stopped it.

`harness train` and the improvement loop both train through `train_and_record`, the one
path that records a training: started (before it runs, so a crash leaves a trace), then
completed with its outcome or failed with its error. With several training processes
only the main one records: the others never open the store.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harness.components.contracts import Trainer
from harness.progress import Reporter
from harness.store import Store, insert
from harness.store.core import utcnow
from harness.suite.prompts import PromptConfig
from harness.types import ModelSpec, TrainingExample, TrainingOutcome


def spec_record(spec: ModelSpec) -> dict[str, Any]:
    """A checkpoint spec as stored (JSON)."""
    return {
        "path": spec.path,
        "adapter": spec.adapter,
        "backend": spec.backend,
        "options": dict(spec.options),
    }


def start_training_run(
    store: Store,
    *,
    trainer: str,
    args: BaseModel,
    manifest_hash: str | None,
    base: ModelSpec,
    base_hash: str,
    output: Path,
) -> int:
    """Record a training as running (before it starts, so a crash leaves a trace); its id."""
    with store.transaction() as con:
        row = con.execute(
            "INSERT INTO training_runs (trainer, args, manifest_hash, base_path, base_adapter, "
            "base_checkpoint_hash, output_path, status, started_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?) RETURNING training_id",
            [
                trainer,
                args.model_dump_json(),
                manifest_hash,
                base.path,
                base.adapter,
                base_hash,
                str(output),
                utcnow(),
            ],
        ).fetchone()
    assert row is not None
    return int(row[0])


def fail_training_run(store: Store, training_id: int, error: str) -> None:
    """Mark a training failed, with the error that stopped it."""
    with store.transaction() as con:
        con.execute(
            "UPDATE training_runs SET status = 'failed', error = ?, finished_at = ? "
            "WHERE training_id = ?",
            [error, utcnow(), training_id],
        )


def finish_training_run(store: Store, training_id: int, outcome: TrainingOutcome) -> None:
    """Mark a training completed: its outcome, and its training and validation curves."""
    details = {
        **dict(outcome.details),
        "train_time_s": outcome.train_time_s,
        "truncated_examples": outcome.truncated_examples,
    }
    with store.transaction() as con:
        con.execute(
            "UPDATE training_runs SET status = 'completed', output_checkpoint = ?, "
            "output_checkpoint_hash = ?, tokens_trained = ?, response_tokens = ?, "
            "padding_share = ?, tokens_per_second = ?, wall_time_s = ?, steps = ?, epochs = ?, "
            "best_step = ?, stopped_early = ?, resumed = ?, train_examples = ?, "
            "validation_examples = ?, details = ?, finished_at = ? WHERE training_id = ?",
            [
                json.dumps(spec_record(outcome.checkpoint)),
                outcome.checkpoint_hash,
                outcome.tokens_trained,
                outcome.response_tokens,
                outcome.padding_share,
                outcome.tokens_per_second,
                outcome.wall_time_s,
                outcome.steps,
                outcome.epochs,
                outcome.best_step,
                outcome.stopped_early,
                outcome.resumed,
                outcome.train_examples,
                outcome.validation_examples,
                json.dumps(details, default=str),
                utcnow(),
                training_id,
            ],
        )
        curves: list[tuple[int, str, float, float | None]] = [
            (s, "train", loss, lr) for s, loss, lr in outcome.loss_curve
        ]
        curves += [(s, "validation", loss, None) for s, loss in outcome.validation_curve]
        insert(
            con,
            "training_curves",
            {
                "training_id": [training_id] * len(curves),
                "step": [c[0] for c in curves],
                "split": [c[1] for c in curves],
                "loss": [c[2] for c in curves],
                "learning_rate": [c[3] for c in curves],
            },
            ignore_conflicts=True,
        )


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
