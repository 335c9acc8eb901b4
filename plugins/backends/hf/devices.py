"""Where the `hf` backend runs its model and how much of it fits: the device and dtype
an `auto` option picks, int8 quantisation on CPU, and the batch sizes that fit in memory
(a fixed size on CPU; on a GPU, the free memory over an estimate of what a row needs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import ConfigError


def quantize_int8(model: Any) -> Any:
    """Every Linear layer (the adapter's too) with int8 weights and dynamically quantised
    activations: torch.ao's dynamic quantisation, deprecated in torch but working on the
    CPUs it supports."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*", module="torch.ao")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux: cannot tell, say nothing
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_device(requested: str) -> Any:
    import torch

    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(requested: str, device: Any) -> Any:
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


CPU_MAX_BATCH = 256
"""The most rows batch_size=auto takes on CPU. Small batches leave a CPU's matrix units
idle: the dictionary suite's 200 prompts (SmolLM2-135M, fp32, 2 cores, continuous
batching) took 51.9 s at 32 rows, 30.2 s at 128 and 23.9 s at 256 (bench/RESULTS.md)."""
CPU_MEMORY_SHARE = 0.25
"""Share of the available RAM the batch may take on CPU (training, embedding and the
rest of the process live beside it)."""


def initial_batch_size(requested: int) -> int:
    if requested < 1:
        raise ConfigError(f"batch_size must be at least 1, got {requested}")
    return requested


def available_ram() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def fit_batch_size(free_bytes: int, row_bytes: int, *, headroom: float = 0.8, most: int = 1024) -> int:
    """The largest power of two of rows whose estimated memory fits in `headroom` of the
    free memory (at least 1, at most `most`). A power of two, so that halving on
    out-of-memory walks the usual sizes."""
    rows = int(free_bytes * headroom) // max(row_bytes, 1)
    if rows < 1:
        return 1
    return min(most, 1 << (rows.bit_length() - 1))


def bytes_per_row(config: Any, tokens: int, dtype: Any) -> int:
    """Estimated GPU memory one row of a batch needs for `tokens` positions (prompt plus
    new tokens): its KV cache, the activations of one layer's prefill (hidden states,
    q/k/v, the MLP, attention scores) and the float32 logits of a decoding step, which
    the logits processors copy a few times. An estimate: halving on out-of-memory
    corrects it."""
    import torch

    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    hidden = int(text.hidden_size)
    heads = int(text.num_attention_heads)
    layers = int(text.num_hidden_layers)
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    head_dim = int(getattr(text, "head_dim", None) or hidden // heads)
    intermediate = int(getattr(text, "intermediate_size", None) or 4 * hidden)
    element = torch.finfo(dtype).bits // 8
    kv_cache = 2 * layers * kv_heads * head_dim * tokens * element
    activations = tokens * (6 * hidden + 3 * intermediate) * element + heads * tokens * tokens * element
    logits = 4 * int(text.vocab_size) * 4
    return kv_cache + activations + logits


def free_gpu_bytes(device: Any) -> int:
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    # What torch's allocator holds but does not use is free to it as well.
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
