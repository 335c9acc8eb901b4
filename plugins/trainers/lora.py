"""`lora`: a peft LoRA adapter on every attention and MLP projection of the model."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field

from harness import InstructionTuner, Registry, TrainingArgs, hookimpl
from harness.plugins.trainers._layers import find_projection_layers


class LoraArgs(TrainingArgs):
    """Arguments of the `lora` trainer."""

    rank: int = Field(8, ge=1, description="Rank of the low-rank update (r).")
    alpha: float = Field(16.0, gt=0, description="Scale of the update: alpha / rank (lora_alpha).")
    dropout: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Dropout on the adapter's input (lora_dropout). Off by default, as in peft: "
        "on a CPU its masks cost 15-25 % of each step (bench/training.py).",
    )
    target_modules: list[str] | None = Field(
        None,
        description="Module names to adapt; None finds every attention and MLP projection.",
    )


class LoraTrainer(InstructionTuner):
    """Trains a LoRA adapter; the base model stays as it is."""

    name = "lora"
    description = "peft LoRA adapter on every attention and MLP projection (saved as an adapter)"
    Args: ClassVar[type[BaseModel]] = LoraArgs
    produces_adapter = True
    continued_fields = ("r", "lora_alpha", "target_modules")
    requested_fields = ("lora_dropout",)

    def peft_config(self, model: Any, args: BaseModel) -> Any:
        from peft import LoraConfig

        assert isinstance(args, LoraArgs)
        targets = args.target_modules
        if targets is None:
            layers = find_projection_layers(model)
            (targets,) = layers.patterns(layers.all)
        return LoraConfig(
            r=args.rank,
            lora_alpha=args.alpha,
            lora_dropout=args.dropout,
            target_modules=targets,
            bias="none",
            task_type="CAUSAL_LM",
        )


@hookimpl
def harness_register_trainers(registry: Registry) -> None:
    registry.add_trainer(LoraTrainer())
