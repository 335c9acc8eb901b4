"""The arguments every built-in trainer shares (`-t KEY=VALUE`), validated with pydantic."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainingArgs(BaseModel):
    """Arguments every built-in trainer takes. Defaults suit small models on a CPU."""

    model_config = ConfigDict(extra="forbid")

    epochs: float = Field(3.0, gt=0, description="Passes over the training data.")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps (overrides epochs)."
    )
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate (AdamW).")
    lr_scheduler: Literal[
        "linear", "cosine", "constant_with_warmup", "inverse_sqrt", "polynomial"
    ] = Field("cosine", description="Decay after warm-up.")
    warmup_ratio: float = Field(
        0.1, ge=0, lt=1, description="Share of the steps spent warming the learning rate up from 0."
    )
    weight_decay: float = Field(
        0.01, ge=0, description="AdamW weight decay (not on biases and norms)."
    )
    batch_size: int = Field(
        4, ge=1, description="Rows per micro-batch; a packed row holds several examples."
    )
    gradient_accumulation_steps: int = Field(
        1, ge=1, description="Micro-batches per optimizer step."
    )
    max_length: int = Field(
        256, ge=8, description="Tokens per example (longer ones are cut) and per packed row."
    )
    batching: Literal["packed", "length_grouped", "padded"] = Field(
        "packed",
        description="packed: whole examples share rows with per-example attention, little "
        "padding; length_grouped: batches of similar length, padded; padded: random batches.",
    )
    validation_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Share of train held out (with the seed) when no validation set is given; "
        "0 turns validation and early stopping off.",
    )
    save_steps: int = Field(25, ge=1, description="Write a resumable checkpoint every N steps.")
    eval_steps: int | None = Field(
        None, ge=1, description="Compute the validation loss every N steps (default: save_steps)."
    )
    early_stopping_patience: int | None = Field(
        3, ge=1, description="Stop after N evaluations without improvement; None never stops early."
    )
    early_stopping_threshold: float = Field(
        0.0, ge=0, description="How much the validation loss must fall to count as improving."
    )
    load_best_at_end: bool = Field(
        True, description="Finish with the weights of the lowest validation loss."
    )
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping; 0 turns it off.")
    seed: int = Field(0, description="Seeds initialisation, data order, dropout and the split.")
    resume: bool = Field(
        False, description="Continue from the latest checkpoint in the output directory."
    )
    keep_checkpoints: bool = Field(
        False, description="Keep the intermediate checkpoints after a successful run."
    )
    save_total_limit: int = Field(2, ge=1, description="Intermediate checkpoints kept on disk.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward: less memory, about 20% slower."
    )
    bf16: bool = Field(False, description="bfloat16 mixed precision (GPUs and recent CPUs).")
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads during this run (default: torch's own choice)."
    )

    @model_validator(mode="after")
    def _steps_agree(self) -> TrainingArgs:
        every = self.eval_steps or self.save_steps
        if self.load_best_at_end and self.save_steps % every:
            raise ValueError(
                f"save_steps ({self.save_steps}) must be a multiple of eval_steps ({every}) so that "
                "the best checkpoint exists to restore; change one, or set load_best_at_end: false"
            )
        return self
