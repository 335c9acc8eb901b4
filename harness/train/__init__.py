"""Stage 6, training: a checkpoint fine-tuned on a dataset, and the training recorded.

The fine-tuning the built-in trainers share, by job: `launch` (which process this is),
`args` (the shared arguments), `encoding` (rows as model inputs), `engine` (the training
run, `InstructionTuner`), `adapters` (continuing an adapter), `output_dir` (checkpoints,
resuming and the final model) and `hf` (the transformers / TRL / peft side); and `runs`,
the one train-and-record path that `harness train` and the loop share."""

from harness.train.args import TrainingArgs
from harness.train.encoding import IGNORE_INDEX, encode_examples, prompt_renderer, split_validation
from harness.train.engine import InstructionTuner, prepare
from harness.train.hf import _plain_causal_lm, quiet_peft_version_skew
from harness.train.launch import (
    _accelerator_available,
    check_launch,
    distributed_state,
    is_main_process,
    process_count,
)
from harness.train.output_dir import check_output_dir
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
