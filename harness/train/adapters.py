"""Adapters in training: continuing the adapter a base checkpoint already has (or
merging it, for full fine-tuning), and the summary of a peft config that a training
records in its details."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel

from harness.errors import ConfigError
from harness.generate import checkpoints
from harness.train.args import TrainingArgs
from harness.train.hf import quiet_peft_version_skew


class AdapterTrainer(Protocol):
    """What continuing an adapter asks of the trainer (an `InstructionTuner`)."""

    @property
    def name(self) -> str: ...

    @property
    def produces_adapter(self) -> bool: ...

    @property
    def continued_fields(self) -> tuple[str, ...]:
        """peft config fields a continued adapter must share with the requested one."""

    @property
    def requested_fields(self) -> tuple[str, ...]:
        """peft config fields that shape the training, not the adapter (dropout): a
        continued adapter takes the requested value."""

    def peft_config(self, model: Any, args: BaseModel) -> Any: ...


def with_existing_adapter(
    tuner: AdapterTrainer, model: Any, adapter: str, args: TrainingArgs, details: dict[str, Any]
) -> Any:
    """Continue training the base's adapter (adapter methods) or merge it (full fine-tuning)."""
    from peft import PeftConfig, PeftModel

    adapter_dir = checkpoints.resolve_adapter_dir(adapter)
    details["continued_adapter"] = str(adapter_dir)
    if not tuner.produces_adapter:
        with quiet_peft_version_skew():
            return PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    wanted = tuner.peft_config(model, args)  # from the plain model, before adapter layers wrap it
    saved = PeftConfig.from_pretrained(str(adapter_dir))
    for name in tuner.requested_fields:
        setattr(saved, name, getattr(wanted, name))
    with quiet_peft_version_skew():
        model = PeftModel.from_pretrained(model, adapter_dir, is_trainable=True, config=saved)
    existing = model.peft_config["default"]
    if existing.peft_type != wanted.peft_type:
        raise ConfigError(
            f"the adapter {adapter_dir} is {existing.peft_type.value}, not what trainer {tuner.name!r} "
            "trains; use the matching trainer, or train on the base model alone"
        )
    for name in tuner.continued_fields:
        have, want = getattr(existing, name), getattr(wanted, name)
        if isinstance(have, (set, list, tuple)):
            have, want = sorted(have), sorted(want or [])
        if have != want:
            raise ConfigError(
                f"the adapter {adapter_dir} has {name}={have!r} but the arguments ask for {want!r}; "
                f"continuing an adapter keeps its shape, so pass {name}={have!r}"
            )
    details["peft"] = peft_summary(existing)
    return model


def peft_summary(config: Any) -> dict[str, Any]:
    """The method, target modules and shape of a peft config, as a training records them."""
    summary: dict[str, Any] = {"method": config.peft_type.value}
    for name in ("target_modules", "feedforward_modules"):
        value = getattr(config, name, None)
        if value is not None:
            summary[name] = sorted(value) if not isinstance(value, str) else value
    for name in ("r", "lora_alpha", "lora_dropout"):
        if hasattr(config, name):
            summary[name] = getattr(config, name)
    return summary
