"""Training runs in the store: a row in `training_runs` when training starts, its outcome
and its loss curves (`training_curves`) when it ends, or the error that stopped it.

`harness.train.runs.train_and_record`, the one path that records a training, calls
these in that order.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from harness.store import Store, insert
from harness.store.core import utcnow
from harness.types import ModelSpec, TrainingOutcome, spec_record


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
