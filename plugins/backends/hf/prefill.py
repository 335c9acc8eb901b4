"""Prompts laid out for a batch, and the prefill of what the rows of a batch share.

`layout` pads a batch (the shared prefix in the first columns, each row's rest
right-aligned), `SharedPrefill` computes a shared prefix and repeated prompts once and
repeats their KV cache, and `BatchCounts` keeps the padding and prefill figures the
backend reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from harness.plugins.backends.hf.continuous import _cache_argument


def layout(batch: Sequence[Sequence[int]], prefix: int, pad_id: int) -> tuple[Any, Any]:
    """(input ids, attention mask) of a batch: the `prefix` tokens every row shares in the
    first columns, then padding, then the rest of each row, right-aligned. With prefix 0
    this is plain left padding. Positions come from the mask (generate numbers them by
    its running sum), so each token sits at the same position either way."""
    import torch

    width = prefix + max(len(ids) - prefix for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, :prefix] = torch.tensor(ids[:prefix], dtype=torch.long)
        attention[row, :prefix] = 1
        rest = ids[prefix:]
        input_ids[row, width - len(rest) :] = torch.tensor(rest, dtype=torch.long)
        attention[row, width - len(rest) :] = 1
    return input_ids, attention


@dataclass
class BatchCounts:
    """Prompt positions of one or more batches: padding, real tokens, and how many the
    model prefilled and how many a shared prefill spared it."""

    padded: int = 0
    real: int = 0
    prefilled: int = 0
    saved: int = 0

    def __iadd__(self, other: BatchCounts) -> BatchCounts:
        self.padded += other.padded
        self.real += other.real
        self.prefilled += other.prefilled
        self.saved += other.saved
        return self

    @property
    def padding_share(self) -> float:
        return self.padded / max(self.padded + self.real, 1)


@dataclass(frozen=True)
class SharedPrefill:
    """How one batch prefills what its rows share.

    The tokens every row begins with (an instruction, a system prompt, a few-shot
    prefix) are computed once, for one row, and their KV cache repeated for each
    distinct prompt; the rest of each distinct prompt is computed once and its cache
    repeated for every row that asks for the same prompt (the sampled draws of one
    sample). `generate` then starts from that cache and computes only each row's last
    prompt token. Every cached token keeps its position and sees the same tokens it
    would see in an ordinary batch, so outputs are the same (tests/test_hf_backend.py
    checks greedy and seeded sampling against the ordinary path)."""

    prefix: int
    """Tokens shared by every row, at most the shortest row but one (generate needs one
    uncached token per row to produce the first logits)."""
    distinct: tuple[int, ...]
    """The first row of each distinct prompt."""
    rows: tuple[int, ...]
    """Each row's distinct prompt (an index into `distinct`)."""
    width: int
    prefilled: int
    """Positions computed: the shared prefix, each distinct prompt's rest, each row's last token."""
    saved: int
    """Positions an ordinary batch would compute beyond `prefilled`."""

    @classmethod
    def plan(cls, batch: Sequence[Sequence[int]]) -> SharedPrefill | None:
        """The plan for a batch, or None when nothing is shared."""
        shortest = min(len(ids) for ids in batch)
        prefix = 0
        for column in zip(*batch):
            if prefix >= shortest - 1 or any(token != column[0] for token in column):
                break
            prefix += 1
        first: dict[tuple[int, ...], int] = {}
        rows = tuple(first.setdefault(tuple(ids), len(first)) for ids in batch)
        distinct = tuple(rows.index(d) for d in range(len(first)))
        width = prefix + max(len(ids) - prefix for ids in batch)
        shared = prefix if len(distinct) > 1 else 0  # one distinct prompt: one pass does it all
        prefilled = shared + len(distinct) * (width - 1 - shared) + len(batch)
        saved = len(batch) * width - prefilled
        if saved <= 0:
            return None
        return cls(prefix, distinct, rows, width, prefilled, saved)

    def prefill(self, model: Any, input_ids: Any, attention: Any) -> Any:
        """The KV cache of every row's prompt but its last token (a DynamicCache of
        len(rows) rows and width - 1 positions), for `generate(past_key_values=...)`."""
        import torch
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config.get_text_config(decoder=True))
        # As generate numbers positions: by the running sum of the mask, padding at 0.
        positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 0)
        distinct = torch.tensor(self.distinct, device=input_ids.device)
        ids, mask, positions = input_ids[distinct], attention[distinct], positions[distinct]
        start, end = 0, self.width - 1
        if self.prefix and len(self.distinct) > 1:
            head = slice(0, self.prefix)
            extend_cache(model, ids[:1, head], mask[:1, head], positions[:1, head], cache)
            cache.batch_repeat_interleave(len(self.distinct))
            start = self.prefix
        if end > start:
            extend_cache(model, ids[:, start:end], mask[:, :end], positions[:, start:end], cache)
        cache.batch_select_indices(torch.tensor(self.rows, device=input_ids.device))
        return cache


def extend_cache(model: Any, ids: Any, mask: Any, positions: Any, cache: Any) -> None:
    """One forward pass that appends `ids` to `cache`; `mask` covers the cache and `ids`."""
    model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        **{_cache_argument(model): cache},
        use_cache=True,
        logits_to_keep=1,  # the logits are not used; keep the LM head to one position
    )
