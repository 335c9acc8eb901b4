"""Continuous batching for the `hf` backend: a row leaves the batch the step it finishes,
and waiting prompts take the freed places.

A static batch decodes until its longest row stops, so every row that finished early
keeps costing a row of compute per step (the shorter answers of a fine-tuned model
saved nothing). Here the batch is a set of rows over one KV cache (a transformers
`DynamicCache` of full-attention layers) that this module edits by hand:

- a finished row is removed from the cache and the attention mask at once, and the
  columns no row attends to any more (left padding of rows that left) are cut;
- once a quarter of the places are free, the next waiting prompts are prefilled
  (sharing their common prefix, as the static path does) and joined to the cache,
  left-padded to its width (or the cache to theirs).

Every token keeps its position (given explicitly, counted from the mask) and sees the
same real tokens it would see decoded alone; masked columns add nothing to attention.
tests/test_hf_backend.py checks greedy and seeded sampled outputs against decoding one
prompt at a time.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    """One prompt being decoded."""

    index: int
    """The caller's index of the prompt."""
    prompt: list[int]
    generator: Any = None
    """Its own seeded torch.Generator when sampling."""
    generated: list[int] = field(default_factory=list)
    next_token: int = 0
    """The token the next step feeds: the prompt's last, then the last generated one."""
    cost_s: float = 0.0
    """Its share of the wall time of the passes it took part in."""
    finish: str | None = None


@dataclass
class DecodeCounts:
    """Decoding steps of one or more batches, and how many row-steps went to rows that
    had already finished (a static batch keeps decoding them until its longest row stops)."""

    steps: int = 0
    row_steps: int = 0
    finished_row_steps: int = 0

    def __iadd__(self, other: DecodeCounts) -> DecodeCounts:
        self.steps += other.steps
        self.row_steps += other.row_steps
        self.finished_row_steps += other.finished_row_steps
        return self

    @property
    def finished_share(self) -> float:
        return self.finished_row_steps / max(self.row_steps, 1)


Prefill = Callable[[list[list[int]]], tuple[Any, Any]]
"""(prompts) -> (cache of every prompt but its last token, its attention mask): how
waiting prompts enter the batch."""


class ContinuousBatch:
    """Decode prompts with at most `size` rows at a time, refilling freed rows."""

    def __init__(
        self,
        model: Any,
        *,
        size: int,
        max_new_tokens: int,
        eos_ids: Sequence[int],
        prefill: Prefill,
        sampler: Any = None,
        stop: Any = None,
        pad_id: int = 0,
    ):
        self.model = model
        self.size = size
        self.max_new_tokens = max_new_tokens
        self.eos_ids = frozenset(eos_ids)
        self.prefill = prefill
        self.sampler = sampler
        """A PerRowSampler whose generators this batch sets to its rows' each step."""
        self.stop = stop
        """A StopStringCriteria, or None."""
        self.pad_id = pad_id
        self.refill_at = max(1, size // 4)
        """Free places that make the batch admit waiting prompts (each admission copies
        the cache once, so not at every freed row)."""
        self.rows: list[Row] = []
        self.cache: Any = None
        self.mask: Any = None  # (rows, cache columns), 1 where a row has a real token
        self.counts = DecodeCounts()

    def run(self, waiting: Sequence[Row]) -> Iterator[Row]:
        """Yield each row as it finishes (text not decoded: `generated` holds its ids)."""
        queue = list(waiting)
        while queue or self.rows:
            free = self.size - len(self.rows)
            if queue and (free >= self.refill_at or not self.rows):
                joining, queue = queue[:free], queue[free:]
                self._admit(joining)
            yield from self._step()

    # -- admission ------------------------------------------------------------------

    def _admit(self, joining: list[Row]) -> None:
        import torch

        started = time.perf_counter()
        cache, mask = self.prefill([row.prompt for row in joining])
        for row in joining:
            row.next_token = row.prompt[-1]
        if not self.rows:
            self.cache, self.mask = cache, mask
        else:
            width = max(self.mask.shape[1], mask.shape[1])
            self._pad_left(self.cache, width - self.mask.shape[1], len(self.rows), like=cache)
            self._pad_left(cache, width - mask.shape[1], len(joining), like=self.cache)
            for mine, theirs in zip(_layers(self.cache), _layers(cache)):
                if _width(mine) or _width(theirs):
                    mine.keys = torch.cat([mine.keys, theirs.keys], dim=0)
                    mine.values = torch.cat([mine.values, theirs.values], dim=0)
            self.mask = torch.cat([_pad_mask(self.mask, width), _pad_mask(mask, width)], dim=0)
        self.rows.extend(joining)
        share = (time.perf_counter() - started) / len(joining)
        for row in joining:
            row.cost_s += share

    @staticmethod
    def _pad_left(cache: Any, columns: int, rows: int, *, like: Any) -> None:
        """Prepend `columns` masked positions to every layer of `cache` (`rows` rows; zeros,
        which the mask hides). A cache with nothing in it yet (prompts of one token)
        takes the other dimensions from `like`."""
        import torch

        if columns <= 0:
            return
        for layer, other in zip(_layers(cache), _layers(like)):
            source = layer if _width(layer) else other
            for name in ("keys", "values"):
                tensor = getattr(source, name)
                zeros = tensor.new_zeros((rows, tensor.shape[1], columns, tensor.shape[-1]))
                setattr(layer, name, torch.cat([zeros, getattr(layer, name)], dim=-2) if _width(layer) else zeros)
            layer.device, layer.is_initialized = layer.keys.device, True

    # -- decoding -------------------------------------------------------------------

    def _step(self) -> Iterator[Row]:
        import torch

        started = time.perf_counter()
        device = self.mask.device
        tokens = torch.tensor([[row.next_token] for row in self.rows], device=device)
        positions = self.mask.sum(-1, keepdim=True)
        self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=-1)
        logits = self.model(
            input_ids=tokens,
            attention_mask=self.mask,
            position_ids=positions,
            **{_cache_argument(self.model): self.cache},
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1].float()
        if self.sampler is not None:
            self.sampler.generators = [row.generator for row in self.rows]
            logits = self.sampler(None, logits)
        chosen = logits.argmax(-1).tolist()
        stopped = self._stopped(chosen) if self.stop is not None else [False] * len(chosen)
        self.counts.steps += 1
        self.counts.row_steps += len(self.rows)
        share = (time.perf_counter() - started) / len(self.rows)
        for row, token, on_string in zip(self.rows, chosen, stopped):
            row.generated.append(token)
            row.next_token = token
            row.cost_s += share
            if token in self.eos_ids:
                row.finish = "eos"
            elif on_string:
                row.finish = "stop"
            elif len(row.generated) >= self.max_new_tokens:
                row.finish = "length"
        done = [row for row in self.rows if row.finish]
        if done:
            self._drop(done)
        yield from done

    def _stopped(self, chosen: list[int]) -> list[bool]:
        """Which rows end on a stop string, once `chosen` is appended: the checker reads
        the last tokens of prompt and output, as it does inside `generate`."""
        import torch

        tail = self.stop.maximum_token_len
        ids = torch.full((len(self.rows), tail), self.pad_id, dtype=torch.long)
        for i, (row, token) in enumerate(zip(self.rows, chosen)):
            last = (row.prompt + row.generated + [token])[-tail:]
            ids[i, tail - len(last) :] = torch.tensor(last, dtype=torch.long)
        return self.stop(ids, None).tolist()

    def _drop(self, done: list[Row]) -> None:
        """Remove finished rows from the cache and the mask, then the columns no row
        attends to any more."""
        import torch

        keep = [i for i, row in enumerate(self.rows) if not row.finish]
        self.rows = [self.rows[i] for i in keep]
        if not self.rows:
            self.cache = self.mask = None
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        columns = self.mask.any(0)
        if not bool(columns.all()):
            where = columns.nonzero().squeeze(-1)
            for layer in _layers(self.cache):
                layer.keys = layer.keys.index_select(-2, where)
                layer.values = layer.values.index_select(-2, where)
            self.mask = self.mask.index_select(-1, where)


def _layers(cache: Any) -> list[Any]:
    return list(cache.layers)


def _width(layer: Any) -> int:
    keys = getattr(layer, "keys", None)
    return 0 if keys is None or keys.dim() < 4 else int(keys.shape[-2])


def _pad_mask(mask: Any, width: int) -> Any:
    import torch

    if mask.shape[1] == width:
        return mask
    pad = mask.new_zeros((mask.shape[0], width - mask.shape[1]))
    return torch.cat([pad, mask], dim=-1)


def _cache_argument(model: Any) -> str:
    """The name under which the model takes a KV cache: `cache` since transformers 5.x
    renamed it (the old `past_key_values` warns on every call), else `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
