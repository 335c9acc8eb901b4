"""A training's output directory: the checkpoints written in it, resuming from the
latest complete one, and the final model, written so that an interrupted save never
looks like a finished model."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.errors import ConfigError

MARKERS = ("adapter_config.json", "config.json")
"""Files whose presence makes a directory a finished checkpoint; written last."""

CHECKPOINT_PREFIX = "checkpoint-"


def check_output_dir(output_dir: Path, *, resume: bool) -> Path | None:
    """The checkpoint to resume from (None: start afresh), or an error when `output_dir`
    holds a finished model, or checkpoints that `resume` does not ask to continue."""
    finished = [m for m in MARKERS if (output_dir / m).is_file()]
    if finished:
        raise ConfigError(
            f"{output_dir} already holds a trained checkpoint ({finished[0]}); train into a new directory"
        )
    resume_from = latest_checkpoint(output_dir)
    if resume_from is not None and not resume:
        raise ConfigError(
            f"{output_dir} holds checkpoints of an earlier run (latest: {resume_from.name}); "
            "pass resume: true to continue it, or train into an empty directory"
        )
    return resume_from


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint (one whose trainer state was written, which happens last)."""
    found = []
    for path in Path(output_dir).glob(f"{CHECKPOINT_PREFIX}*"):
        suffix = path.name[len(CHECKPOINT_PREFIX) :]
        if path.is_dir() and suffix.isdigit() and (path / "trainer_state.json").is_file():
            found.append((int(suffix), path))
    return max(found)[1] if found else None


def gathered_state_dict(trainer: Any) -> dict[str, Any] | None:
    """The full state dict of a sharded (FSDP) model, gathered from every process (each
    must call this); None when every process holds whole weights, which save as they are."""
    from accelerate.utils import DistributedType

    if trainer.accelerator.distributed_type != DistributedType.FSDP:
        return None
    return trainer.accelerator.get_state_dict(trainer.model_wrapped)


def save_final(
    model: Any,
    tokenizer: Any,
    output_dir: Path,
    *,
    adapter: bool,
    state_dict: dict[str, Any] | None = None,
) -> None:
    """Write the model beside the checkpoints; the marker files arrive last, so an
    interrupted save never looks like a finished model."""
    staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=output_dir))
    try:
        if state_dict is None:
            model.save_pretrained(staging)
        else:
            model.save_pretrained(staging, state_dict=state_dict)
        if not adapter:
            tokenizer.save_pretrained(staging)
        sort_module_lists(staging / "adapter_config.json")
        for path in sorted(staging.iterdir(), key=lambda p: p.name in MARKERS):
            path.replace(output_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def sort_module_lists(adapter_config: Path) -> None:
    """Sort the module names peft writes from sets (target_modules, ...): a set's order
    changes with every process's string hashing, and with it the checkpoint's content
    hash, though the adapter is the same."""
    if not adapter_config.is_file():
        return
    config = json.loads(adapter_config.read_text(encoding="utf-8"))
    for key, value in config.items():
        if key.endswith("_modules") and isinstance(value, list):
            config[key] = sorted(value)
    adapter_config.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
