"""Fine-tuning shared by the built-in trainers, by job: `launch` (which process this is),
`args` (the shared arguments), `encoding` (rows as model inputs), `engine` (the training
run, `InstructionTuner`) and `hf` (the transformers / TRL / peft side)."""

from harness.training.args import TrainingArgs
from harness.training.encoding import IGNORE_INDEX, encode_examples, prompt_renderer, split_validation
from harness.training.engine import InstructionTuner, check_output_dir, prepare
from harness.training.hf import _plain_causal_lm, quiet_peft_version_skew
from harness.training.launch import (
    _accelerator_available,
    check_launch,
    distributed_state,
    is_main_process,
    process_count,
)
from harness.types import TrainingOutcome

__all__ = [
    "IGNORE_INDEX",
    "InstructionTuner",
    "TrainingArgs",
    "TrainingOutcome",
    "_accelerator_available",
    "_plain_causal_lm",
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
