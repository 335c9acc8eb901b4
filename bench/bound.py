"""The generation throughput this machine allows the default model, from its measured limits.

    python bench/bound.py                            # default model, batch sizes 1..64
    python bench/bound.py --batch-sizes 8,32 --context 70 --threads 1

It measures the memory bandwidth (a 512 MB array copy, read + write) and the FLOP/s of
a 2048 x 2048 float32 matrix product with torch's threads, then bounds one decoding step
of a batch of b rows:

- memory: the step reads every weight once (the tied embedding too, as the LM head),
  plus the KV cache of every row: bytes = weights + b x context x KV bytes per token;
- compute: every row does 2 FLOPs per weight of a matrix product, plus attention over
  its context: FLOPs = b x (2 x matrix weights + 4 x layers x heads x head dim x context).

A step takes at least max(bytes / bandwidth, FLOPs / FLOP/s), so no implementation on
this machine decodes faster than b / that tokens per second. Prefill, padding and rows
that keep decoding after they have finished all come on top, so a real run stays below
the bound; bench/generation.py prints the bound beside what it measures.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from _machine import describe, machine, matmul_flops, memory_bandwidth, write_json  # noqa: E402


@dataclass(frozen=True)
class ModelFigures:
    """What a decoding step of the model has to read and compute."""

    weight_bytes: int
    """Bytes of all weights (a tied embedding counted once)."""
    matrix_params: int
    """Weights used in matrix products per token (every 2-D weight; the tied embedding
    is the LM head)."""
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    element_bytes: int

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.element_bytes

    def flops_per_token(self, context: int) -> float:
        return 2 * self.matrix_params + 4 * self.layers * self.heads * self.head_dim * context


def model_figures(model_dir: Path) -> ModelFigures:
    """Read from the safetensors headers and config.json, without loading the weights."""
    import json

    from safetensors import safe_open

    weight_bytes = matrix_params = 0
    element_bytes = 4
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():
                tensor = handle.get_slice(name)
                shape = tensor.get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                element_bytes = {"F32": 4, "F16": 2, "BF16": 2}.get(tensor.get_dtype(), 4)
                weight_bytes += count * element_bytes
                if len(shape) >= 2:
                    matrix_params += count
    config = json.loads((model_dir / "config.json").read_text())
    heads = int(config["num_attention_heads"])
    return ModelFigures(
        weight_bytes=weight_bytes,
        matrix_params=matrix_params,
        layers=int(config["num_hidden_layers"]),
        heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or config["hidden_size"] // heads),
        element_bytes=element_bytes,
    )


@dataclass(frozen=True)
class Limits:
    bandwidth: float
    """Bytes per second (best of the copies)."""
    flops: float
    """FLOP/s (best of the products)."""
    bandwidth_median: float
    flops_median: float
    load: float


def measure_limits() -> Limits:
    from _machine import load_average

    best_bw, median_bw = memory_bandwidth()
    best_flops, median_flops = matmul_flops()
    return Limits(best_bw, best_flops, median_bw, median_flops, load_average())


def decode_bound(model: ModelFigures, limits: Limits, batch: int, context: int) -> dict[str, float]:
    """Tokens per second one decoding step of `batch` rows at `context` positions allows."""
    step_bytes = model.weight_bytes + batch * context * model.kv_bytes_per_token
    step_flops = batch * model.flops_per_token(context)
    memory_s = step_bytes / limits.bandwidth
    compute_s = step_flops / limits.flops
    return {
        "batch": batch,
        "memory_bound_tok_s": batch / memory_s,
        "compute_bound_tok_s": batch / compute_s,
        "bound_tok_s": batch / max(memory_s, compute_s),
        "limited_by": "memory" if memory_s >= compute_s else "compute",
    }


def summary(model: ModelFigures, limits: Limits) -> list[str]:
    return [
        f"memory bandwidth {limits.bandwidth / 1e9:.1f} GB/s (median {limits.bandwidth_median / 1e9:.1f}), "
        f"matmul {limits.flops / 1e9:.0f} GFLOP/s (median {limits.flops_median / 1e9:.0f}); "
        f"load average {limits.load:.2f} while measuring",
        f"model: {model.weight_bytes / 1e6:.0f} MB of weights read per decoding step, "
        f"{model.matrix_params / 1e6:.1f} M weights in matrix products "
        f"({2 * model.matrix_params / 1e6:.0f} MFLOP per token), "
        f"KV cache {model.kv_bytes_per_token / 1e3:.1f} kB per token",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--batch-sizes", default="1,4,8,16,32,64")
    parser.add_argument("--context", type=int, default=50, help="prompt + generated positions per row")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    import torch

    from harness.generate.checkpoints import resolve_model_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    model = model_figures(resolve_model_dir(args.model))
    limits = measure_limits()
    info = machine()
    print(describe(info))
    for line in summary(model, limits):
        print(line)
    print(f"\nbound of one decoding step at {args.context} positions per row:")
    print(f"{'batch':>5} {'memory-bound tok/s':>19} {'compute-bound tok/s':>20} {'bound tok/s':>12}  limited by")
    rows: list[dict[str, Any]] = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        row = decode_bound(model, limits, batch, args.context)
        rows.append(row)
        print(
            f"{batch:5d} {row['memory_bound_tok_s']:19.0f} {row['compute_bound_tok_s']:20.0f} "
            f"{row['bound_tok_s']:12.0f}  {row['limited_by']}"
        )
    write_json(args.json, {"machine": info, "limits": limits, "model": model, "context": args.context, "rows": rows})


if __name__ == "__main__":
    main()
