"""Fine-tuning shared by the built-in trainers (see `engine` for how a run goes)."""

from harness.training.engine import (
    IGNORE_INDEX,
    InstructionTuner,
    TrainingArgs,
    _accelerator_available,
    _plain_causal_lm,
    check_launch,
    check_output_dir,
    distributed_state,
    encode_examples,
    is_main_process,
    prepare,
    process_count,
    prompt_renderer,
    quiet_peft_version_skew,
    split_validation,
)
from harness.types import TrainingOutcome

__all__ = [
    "IGNORE_INDEX",
    "InstructionTuner",
    "TrainingArgs",
    "TrainingOutcome",
    "check_launch",
    "check_output_dir",
    "distributed_state",
    "encode_examples",
    "is_main_process",
    "prepare",
    "process_count",
    "prompt_renderer",
    "quiet_peft_version_skew",
    "split_validation",
]
