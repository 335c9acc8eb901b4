"""`ia3`: (IA)^3, learned vectors that rescale the activations of every projection.

Attention and MLP-input projections have their outputs rescaled; MLP output (down)
projections have their inputs, the wide hidden activation, rescaled, as in the paper
(peft's `feedforward_modules`). It trains about a tenth of the parameters of a rank-8
LoRA on the same layers, starting from the identity (all ones), so it wants a higher
learning rate. It has no dropout of its own.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field

from harness import ConfigError, InstructionTuner, Registry, TrainingArgs, hookimpl
from harness.plugins.trainers._layers import find_projection_layers


class IA3Args(TrainingArgs):
    """Arguments of the `ia3` trainer."""

    learning_rate: float = Field(3e-3, gt=0, description="Peak learning rate (AdamW).")
    target_modules: list[str] | None = Field(
        None, description="Module names to rescale; None finds every attention and MLP projection."
    )
    feedforward_modules: list[str] | None = Field(
        None,
        description="Which targets rescale their input instead of their output; None: the MLP "
        "down projections found in the model (requires target_modules to be None as well).",
    )


class IA3Trainer(InstructionTuner):
    """Trains an (IA)^3 adapter; the base model stays as it is."""

    name = "ia3"
    description = "peft (IA)^3 adapter: learned rescaling of every projection (saved as an adapter)"
    Args: ClassVar[type[BaseModel]] = IA3Args
    produces_adapter = True
    continued_fields = ("target_modules", "feedforward_modules")

    def peft_config(self, model: Any, args: BaseModel) -> Any:
        from peft import IA3Config

        assert isinstance(args, IA3Args)
        targets, feedforward = args.target_modules, args.feedforward_modules
        if targets is None:
            if feedforward is not None:
                raise ConfigError("ia3: feedforward_modules needs target_modules to be given too")
            layers = find_projection_layers(model)
            targets, feedforward = layers.patterns(layers.all, layers.mlp_output)
        return IA3Config(
            target_modules=targets,
            feedforward_modules=feedforward or [],
            task_type="CAUSAL_LM",
        )


@hookimpl
def harness_register_trainers(registry: Registry) -> None:
    registry.add_trainer(IA3Trainer())
