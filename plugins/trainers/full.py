"""`full`: full fine-tuning; saves a complete model directory (weights + tokenizer)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field

from harness import ConfigError, InstructionTuner, Registry, TrainingArgs, hookimpl

_DROPOUT_SUFFIXES = ("dropout", "pdrop", "dropout_prob", "dropout_rate")
_NOT_DROPOUT = ("classifier_dropout", "summary_first_dropout")  # heads a causal LM does not use


class FullArgs(TrainingArgs):
    """Arguments of the `full` trainer."""

    learning_rate: float = Field(2e-5, gt=0, description="Peak learning rate (AdamW).")
    dropout: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Set every dropout of the model's config (attention_dropout for Llama; "
        "resid/embd/attn_pdrop for GPT-2) during training; None keeps the model's own values.",
    )


def dropout_fields(config: Any) -> list[str]:
    """The config fields that hold the model's dropout probabilities."""
    return sorted(
        name
        for name, value in config.to_dict().items()
        if name.endswith(_DROPOUT_SUFFIXES)
        and name not in _NOT_DROPOUT
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    )


class FullTrainer(InstructionTuner):
    """Updates every weight and saves a model that loads as a base model."""

    name = "full"
    description = "full fine-tuning (saved as a complete model directory)"
    Args: ClassVar[type[BaseModel]] = FullArgs
    produces_adapter = False

    def model_overrides(self, config: Any, args: BaseModel) -> dict[str, Any]:
        assert isinstance(args, FullArgs)
        if args.dropout is None:
            return {}
        fields = dropout_fields(config)
        if not fields:
            raise ConfigError(
                f"full: the {type(config).__name__} of this model has no dropout setting, so "
                "dropout cannot be applied; leave dropout unset"
            )
        return {name: args.dropout for name in fields}


@hookimpl
def harness_register_trainers(registry: Registry) -> None:
    registry.add_trainer(FullTrainer())
