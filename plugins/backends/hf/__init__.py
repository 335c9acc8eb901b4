"""`hf`: transformers causal language models from a local directory, optionally with a
peft adapter on top.

Generation is batched continuously (`continuous`): prompts are sorted by length (little
padding), padded on the left, decoded with the KV cache under `torch.inference_mode`,
stopped on EOS or stop strings, and a row leaves the batch the step it finishes while a
waiting prompt takes its place (`-o continuous=false`: fixed batches through
`generate`). The stop-string checker is built once per set of strings and reused
(building it costs about 0.45 s and 350 MB per call with the default tokenizer).
Sampling draws each row from its own seeded generator, so a sample's output does not
depend on which other prompts share its batch: a resumed run reproduces exactly what
an uninterrupted one would have produced.

The package, by job:

- `backend`: `HFBackend` and its options: loading the model and adapters, what
  identifies it, log-likelihood scoring;
- `generation`: `BatchedGeneration`, the backend's `generate` (continuous or static
  batches, batch sizes, out-of-memory halving, stop strings, the call's figures);
- `continuous`: the continuous batch over one KV cache edited by hand;
- `prefill`: a batch's layout and the prefill of what its rows share;
- `sampling`: per-row seeded sampling;
- `devices`: device, dtype, int8 quantisation and the batch sizes that fit in memory.
"""

from typing import Any

from harness import hookimpl
from harness.plugins.backends.hf.backend import HFBackend, HFOptions
from harness.plugins.backends.hf.devices import CPU_MAX_BATCH, CPU_MEMORY_SHARE, bytes_per_row, fit_batch_size
from harness.plugins.backends.hf.prefill import BatchCounts, SharedPrefill
from harness.plugins.backends.hf.sampling import PerRowSampler

__all__ = [
    "CPU_MAX_BATCH",
    "CPU_MEMORY_SHARE",
    "BatchCounts",
    "HFBackend",
    "HFOptions",
    "PerRowSampler",
    "SharedPrefill",
    "bytes_per_row",
    "fit_batch_size",
    "harness_register_backends",
]


@hookimpl
def harness_register_backends(registry: Any) -> None:
    registry.add_backend(HFBackend)
