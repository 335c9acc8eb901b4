"""Which process this is: one process, or one of several under torchrun / accelerate launch."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from harness.errors import ConfigError


def _env_int(names: Sequence[str], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value:
            return int(value)
    return default


def process_count() -> int:
    """Processes in this training launch, from the launcher's environment (torchrun and
    `accelerate launch` set WORLD_SIZE; MPI launchers their own variables); 1 otherwise."""
    return _env_int(("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"), 1)


def process_rank() -> int:
    """This process's global rank in the launch (0 when not launched as several processes)."""
    return _env_int(("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"), 0)


def is_main_process() -> bool:
    """Whether this process records results: the only one, or rank 0 of a launch. Known
    from the environment, so it can be asked before any process group exists."""
    return process_rank() == 0


def _accelerator_available() -> bool:
    import torch

    probe = getattr(torch, "accelerator", None)  # torch >= 2.6: CUDA, ROCm, XPU, MPS, ...
    return bool(probe.is_available()) if probe is not None else torch.cuda.is_available()


def cpu_processes() -> bool:
    """Whether this is a launch of several processes on a machine without an accelerator.
    accelerate must then be told to use CPU processes (gloo): otherwise it counts one
    process per launch and each would train the whole run alone."""
    return process_count() > 1 and not _accelerator_available()


def check_launch() -> None:
    """Refuse a launch that would not train as configured. accelerate (1.x) applies an
    FSDP configuration only to processes on accelerator devices: CPU processes would
    quietly train with DDP instead, each holding the whole model."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not _accelerator_available():
        raise ConfigError(
            "the accelerate config asks for FSDP, but this machine has no GPU and accelerate shards "
            "models only across GPUs (on CPU processes it would train with DDP, unsharded); launch "
            "with docs/accelerate/ddp_cpu.yaml or torchrun here, and with the FSDP config on GPUs"
        )


DDP_TIMEOUT_S = 1800
"""How long a process waits for the others at a collective (transformers' ddp_timeout)."""


def distributed_state() -> Any:
    """accelerate's state of this launch, its process group initialised from the launcher's
    environment (the trainer later finds the group and uses it); a plain single process
    otherwise."""
    from datetime import timedelta

    from accelerate import PartialState

    return PartialState(cpu=cpu_processes(), timeout=timedelta(seconds=DDP_TIMEOUT_S))
