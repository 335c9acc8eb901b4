"""Generation in the `hf` backend: prompts decoded in batches, continuously (a row leaves
the batch the step it finishes, see `continuous`) or in fixed batches through
`generate`, with batch sizes that halve after an out-of-memory error, stop strings, and
the padding, prefill and decoding figures of each call.

`BatchedGeneration` is the part of `HFBackend` that generates; the rest of the backend
(loading, adapters, identity, scoring) is `backend`."""

from __future__ import annotations

import inspect
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from harness import Completion, GenerationConfig, Progress
from harness.plugins.backends.hf import devices
from harness.plugins.backends.hf.continuous import ContinuousBatch, DecodeCounts, Row, _cache_argument
from harness.plugins.backends.hf.devices import bytes_per_row, fit_batch_size
from harness.plugins.backends.hf.prefill import BatchCounts, SharedPrefill, extend_cache, layout
from harness.plugins.backends.hf.sampling import PerRowSampler, seeded

log = logging.getLogger(__name__)


class BatchedGeneration:
    """`generate` for `HFBackend`: batched, continuously or in fixed batches.

    It reads the backend's tokenizer, model, device, dtype, options and stats, and keeps
    the batch size it settled on (`batch_size`, `_fits_tokens`)."""

    tokenizer: Any
    device: Any
    dtype: Any
    options: Any
    stats: dict[str, float]
    batch_size: int | None
    _auto_batch: bool
    _fits_tokens: int | None
    _fillable_cache: bool | None
    _stop_criteria: dict[tuple[str, ...], Any]
    model: Any

    def generate(
        self,
        prompts: Sequence[str],
        config: GenerationConfig,
        *,
        seeds: Sequence[int] | None = None,
        progress: Progress | None = None,
    ) -> list[Completion]:

        if not prompts:
            return []
        encoded: list[list[int]] = self.tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        # Each prompt's first occurrence stands for all its copies (the draws of one sample).
        first: dict[tuple[int, ...], int] = {}
        group = [first.setdefault(tuple(ids), i) for i, ids in enumerate(encoded)]
        # Greedy output is a function of the prompt alone: decode each distinct prompt once.
        pending = sorted(set(group)) if config.greedy else list(range(len(prompts)))
        copies = Counter(group) if config.greedy else Counter(pending)
        # Longest first (out-of-memory shows up at once); copies of a prompt side by side, so
        # that a batch prefills them once.
        order = sorted(pending, key=lambda i: (-len(encoded[i]), group[i], i))
        results: dict[int, Completion] = {}
        call, decoding = BatchCounts(), DecodeCounts()

        def done(index: int, completion: Completion) -> None:
            results[index] = completion
            self.stats["tokens"] += completion.completion_tokens
            if progress:
                progress(copies[index])

        started = time.perf_counter()
        if self._continuous():
            self._generate_continuous(order, encoded, config, seeds, done, call, decoding)
        else:
            self._generate_static(order, encoded, config, seeds, done, call, decoding)
        self.stats["seconds"] += time.perf_counter() - started
        self._record(call, decoding, len(prompts))
        return [results[group[i]] if config.greedy else results[i] for i in range(len(prompts))]

    def _halved_after_oom(self, size: int, longest: int) -> int:
        """After an out-of-memory error at `size` rows of up to `longest` tokens: remember
        that half fits, say so, free the cache; the new size."""
        import torch

        half = size // 2
        self._remember_fit(half, longest)
        log.warning("out of memory: batch size halved to %d", half)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return half

    def _generate_static(
        self,
        order: list[int],
        encoded: list[list[int]],
        config: GenerationConfig,
        seeds: Sequence[int] | None,
        done: Callable[[int, Completion], None],
        call: BatchCounts,
        decoding: DecodeCounts,
    ) -> None:
        """Fixed batches of `order`, each decoded by `generate` until its longest row stops."""
        import torch

        size = self._batch_size_for(len(encoded[order[0]]), config)
        position = 0
        while position < len(order):
            batch = order[position : position + size]
            try:
                started = time.perf_counter()
                outputs, counts = self._generate_batch(
                    [encoded[i] for i in batch],
                    config,
                    [seeds[i] for i in batch] if seeds is not None else None,
                )
                elapsed = time.perf_counter() - started
            except torch.cuda.OutOfMemoryError:
                if len(batch) == 1:
                    raise
                size = self._halved_after_oom(len(batch), max(len(encoded[i]) for i in batch) + config.max_new_tokens)
                continue
            call += counts
            steps = max(n for _, _, n in outputs)
            decoding += DecodeCounts(steps, steps * len(batch), sum(steps - n for _, _, n in outputs))
            self.stats["batches"] += 1
            position += len(batch)
            for index, (text, finish, n_tokens) in zip(batch, outputs):
                done(index, self._completion(encoded[index], text, finish, n_tokens, elapsed / len(batch)))

    def _generate_continuous(
        self,
        order: list[int],
        encoded: list[list[int]],
        config: GenerationConfig,
        seeds: Sequence[int] | None,
        done: Callable[[int, Completion], None],
        call: BatchCounts,
        decoding: DecodeCounts,
    ) -> None:
        """`order` through one continuous batch (`continuous`); after an
        out-of-memory error, what has not finished starts again at half the rows."""
        import torch

        eos_ids = eos_token_ids(self.tokenizer, self.model)
        finished: set[int] = set()
        while True:
            waiting = [i for i in order if i not in finished]
            if not waiting:
                return
            size = self._batch_size_for(len(encoded[waiting[0]]), config)
            sampler = None if config.greedy else PerRowSampler(config, [])
            batch = ContinuousBatch(
                self.model,
                size=size,
                max_new_tokens=config.max_new_tokens,
                eos_ids=eos_ids,
                prefill=lambda prompts: self._prefill_rows(prompts, call),
                sampler=sampler,
                stop=self._stop_criterion(config.stop) if config.stop else None,
                pad_id=self.tokenizer.pad_token_id,
            )
            rows = [
                Row(i, encoded[i], seeded(seeds[i] if seeds is not None else config.seed) if sampler else None)
                for i in waiting
            ]
            try:
                with torch.inference_mode():
                    for row in batch.run(rows):
                        text, finish, n_tokens = self._finish(row.generated, config, eos_ids)
                        finished.add(row.index)
                        done(row.index, self._completion(row.prompt, text, finish, n_tokens, row.cost_s))
                return
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                self._halved_after_oom(size, max(len(encoded[i]) for i in waiting) + config.max_new_tokens)
            finally:
                decoding += batch.counts
                self.stats["batches"] += 1

    def _prefill_rows(self, prompts: list[list[int]], call: BatchCounts) -> tuple[Any, Any]:
        """The KV cache of every prompt but its last token, and its attention mask: how
        waiting prompts join a continuous batch (their common prefix computed once)."""
        from transformers import DynamicCache

        plan = SharedPrefill.plan(prompts) if self._can_share_prefill() else None
        input_ids, attention = layout(prompts, plan.prefix if plan else 0, self.tokenizer.pad_token_id)
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        width = input_ids.shape[1]
        real = int(attention.sum())
        counts = BatchCounts(padded=input_ids.numel() - real, real=real)
        if plan is not None:
            cache = plan.prefill(self.model, input_ids, attention)
            counts.prefilled, counts.saved = plan.prefilled, plan.saved
        else:
            cache = DynamicCache(config=self.model.config.get_text_config(decoder=True))
            if width > 1:
                positions = (attention.cumsum(-1) - 1).masked_fill(attention == 0, 0)
                head = slice(0, width - 1)
                extend_cache(self.model, input_ids[:, head], attention[:, head], positions[:, head], cache)
            counts.prefilled = len(prompts) * width
        call += counts
        return cache, attention[:, : width - 1]

    def _completion(self, prompt: list[int], text: str, finish: str, n_tokens: int, seconds: float) -> Completion:
        return Completion(
            text=text,
            prompt_tokens=len(prompt),
            completion_tokens=n_tokens,
            finish_reason=finish,
            latency_s=seconds,
        )

    def _record(self, call: BatchCounts, decoding: DecodeCounts, n_prompts: int) -> None:
        """Keep the call's padding, prefill and decoding figures in `stats` and log them."""
        self.stats["padding_share"] = call.padding_share
        self.stats["decode_steps"] += decoding.steps
        self.stats["row_steps"] += decoding.row_steps
        self.stats["finished_row_steps"] += decoding.finished_row_steps
        self.stats["finished_share"] = decoding.finished_share
        self.stats["padded_tokens"] += call.padded
        self.stats["prompt_tokens"] += call.real
        self.stats["prefill_positions"] += call.prefilled
        self.stats["prefill_positions_saved"] += call.saved
        log.info(
            "generated %d prompts: padding %.1f%% of the prompt positions, prefill shared for "
            "%d of %d positions, %.1f%% of the decoded rows already finished",
            n_prompts,
            100 * call.padding_share,
            call.saved,
            call.prefilled + call.saved,
            100 * decoding.finished_share,
        )

    def _batch_size_for(self, longest_prompt: int, config: GenerationConfig) -> int:
        """Rows per batch for this call.

        A fixed size stays as it is, halved for good after an out-of-memory error. With
        batch_size=auto the size comes from the free memory and the longest sequence of
        the call: on a GPU capped by the token budget of the last batch that had to be
        halved (the largest that is known to fit); on CPU, where running out of memory
        ends the process instead of raising, from a quarter of the available RAM and at
        most CPU_MAX_BATCH rows."""
        if not self._auto_batch:
            assert self.batch_size is not None
            return self.batch_size
        tokens = longest_prompt + config.max_new_tokens
        model = self.model  # loaded first: the weights' memory is not free any more
        free, share, most = self._batch_memory()
        size = fit_batch_size(free, bytes_per_row(model.config, tokens, self.dtype), headroom=share, most=most)
        if self._fits_tokens is not None:
            size = min(size, max(1, self._fits_tokens // tokens))
        self.batch_size = size
        return size

    def _batch_memory(self) -> tuple[int, float, int]:
        """(bytes free, the share of them a batch may take, the most rows) on this device."""
        if self.device.type == "cuda":
            return devices.free_gpu_bytes(self.device), 0.8, 1024
        return devices.available_ram(), devices.CPU_MEMORY_SHARE, devices.CPU_MAX_BATCH

    def _remember_fit(self, size: int, tokens: int) -> None:
        self.batch_size = size
        if self._auto_batch:
            self._fits_tokens = size * tokens

    def _generate_batch(
        self, batch: list[list[int]], config: GenerationConfig, seeds: list[int] | None
    ) -> tuple[list[tuple[str, str, int]], BatchCounts]:
        import torch
        from transformers import GenerationConfig as HFGenerationConfig
        from transformers import LogitsProcessorList, StoppingCriteriaList

        pad_id = self.tokenizer.pad_token_id
        eos_ids = eos_token_ids(self.tokenizer, self.model)
        plan = SharedPrefill.plan(batch) if self._can_share_prefill() else None
        prefix = plan.prefix if plan else 0
        input_ids, attention = layout(batch, prefix, pad_id)
        width = input_ids.shape[1]
        real = int(attention.sum())
        counts = BatchCounts(padded=input_ids.numel() - real, real=real)

        gen_config = HFGenerationConfig(
            max_new_tokens=config.max_new_tokens,
            do_sample=False,  # sampling happens per row in PerRowSampler, seeded per sample
            pad_token_id=pad_id,
            eos_token_id=eos_ids,
            use_cache=True,
        )
        processors = LogitsProcessorList()
        if not config.greedy:
            processors.append(PerRowSampler(config, seeds or [config.seed] * len(batch)))
        criteria = StoppingCriteriaList()
        if config.stop:
            criteria.append(self._stop_criterion(config.stop))
        input_ids, attention = input_ids.to(self.device), attention.to(self.device)
        with torch.inference_mode():
            extra: dict[str, Any] = {}
            if plan is not None:
                extra[_cache_argument(self.model)] = plan.prefill(self.model, input_ids, attention)
                counts.prefilled, counts.saved = plan.prefilled, plan.saved
            else:
                counts.prefilled = len(batch) * width
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention,
                generation_config=gen_config,
                logits_processor=processors,
                stopping_criteria=criteria,
                **extra,
            )
        generated = out[:, width:].tolist()
        return [self._finish(ids, config, eos_ids) for ids in generated], counts

    def _can_share_prefill(self) -> bool:
        return bool(self.options.share_prefill) and self._can_fill_cache()

    def _continuous(self) -> bool:
        return bool(self.options.continuous) and self._can_fill_cache()

    def _can_fill_cache(self) -> bool:
        """Whether the model's cache can be filled, repeated, joined and cut by hand (the
        shared prefill and continuous batching do).

        Only a cache of plain full-attention layers qualifies: sliding-window, chunked,
        linear-attention and shared-KV layers keep state that a filled-in prefix and middle
        padding would not reproduce, so those models take the ordinary path."""
        if self._fillable_cache is None:
            from transformers import DynamicCache
            from transformers.cache_utils import DynamicLayer

            model = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            config = model.config
            layers = (
                []
                if config.is_encoder_decoder
                else DynamicCache(config=config.get_text_config(decoder=True)).layers
            )
            self._fillable_cache = (
                "logits_to_keep" in inspect.signature(model.forward).parameters
                and bool(layers)
                and all(type(layer) is DynamicLayer for layer in layers)
            )
        return self._fillable_cache

    def _finish(self, ids: list[int], config: GenerationConfig, eos_ids: list[int]) -> tuple[str, str, int]:
        """(text, finish reason, completion tokens) of one generated row."""
        end = next((i for i, t in enumerate(ids) if t in eos_ids), None)
        body = ids if end is None else ids[:end]
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        cut = min((text.find(s) for s in config.stop if s and s in text), default=-1)
        if cut >= 0:
            # Rows that stopped on a string are padded with pad (= often EOS) afterwards.
            return text[:cut], "stop", len(body)
        if end is not None:
            return text, "eos", end + 1
        return text, "length", len(ids)

    def _stop_criterion(self, stop: tuple[str, ...]) -> Any:
        from transformers import StopStringCriteria

        criterion = self._stop_criteria.get(stop)
        if criterion is None:
            criterion = StopStringCriteria(self.tokenizer, list(stop))
            self._stop_criteria[stop] = criterion
        return criterion


def eos_token_ids(tokenizer: Any, model: Any) -> list[int]:
    """The tokens that end a row: the model's generation config's EOS ids and the tokenizer's."""
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return sorted(ids)
