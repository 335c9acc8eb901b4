"""Sampling in the `hf` backend: each row draws from its own seeded generator, so that a
sample's output does not depend on which other prompts share its batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from harness import GenerationConfig


class PerRowSampler:
    """A logits processor that samples each row with its own seeded generator.

    It applies temperature, top-k and top-p, draws one token per row and returns
    logits that make greedy decoding pick exactly that token."""

    def __init__(self, config: GenerationConfig, seeds: Sequence[int]):

        self.config = config
        self.generators = [seeded(seed) for seed in seeds]

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logits = scores.float() / self.config.temperature
        if self.config.top_k:
            kth = torch.topk(logits, min(self.config.top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if self.config.top_p < 1.0:
            sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            remove = cumulative - sorted_logits.softmax(-1) > self.config.top_p
            sorted_logits = sorted_logits.masked_fill(remove, float("-inf"))
            logits = torch.full_like(logits, float("-inf")).scatter(1, sorted_idx, sorted_logits)
        probs = logits.softmax(-1).cpu()
        chosen = torch.stack(
            [torch.multinomial(probs[row], 1, generator=gen)[0] for row, gen in enumerate(self.generators)]
        ).to(scores.device)
        out = torch.full_like(scores, float("-inf"))
        out[torch.arange(scores.shape[0], device=scores.device), chosen] = 0.0
        return out


def seeded(seed: int) -> Any:
    import torch

    return torch.Generator().manual_seed(int(seed) % (2**63))
