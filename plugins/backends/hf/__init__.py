"""`hf`: transformers causal language models from a local directory, optionally with a
peft adapter on top.

Generation is batched continuously (plugins/backends/hf/continuous.py): prompts are sorted
by length (little padding), padded on the left, decoded with the KV cache under
`torch.inference_mode`, stopped on EOS or stop strings, and a row leaves the batch the
step it finishes while a waiting prompt takes its place (`-o continuous=false`: fixed
batches through `generate`). The stop-string checker is built once per set of strings and reused
(building it costs about 0.45 s and 350 MB per call with the default tokenizer).
Sampling draws each row from its own seeded generator, so a sample's output does not
depend on which other prompts share its batch: a resumed run reproduces exactly what
an uninterrupted one would have produced.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness import (
    Backend,
    Completion,
    ConfigError,
    GenerationConfig,
    ModelSpec,
    Progress,
    check_adapter_dir,
    check_model_dir,
    checkpoint_content_hash,
    checkpoint_hash,
    hookimpl,
    resolve_adapter_dir,
    resolve_model_dir,
)
from harness.plugins.backends.hf.continuous import ContinuousBatch, DecodeCounts, Row, _cache_argument

log = logging.getLogger(__name__)


class HFOptions(BaseModel):
    """Options of the `hf` backend (`--backend-option key=value`)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int | Literal["auto"] = Field(
        "auto",
        description="Prompts per batch; auto = 32 on CPU, on GPU the largest that fits in free memory.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Weights and activations: auto = float32 on CPU, bfloat16 on a GPU that has it. "
        "Anything but float32 changes outputs, and is part of the run's identity and cache key.",
    )
    quantize: Literal["none", "int8"] = Field(
        "none",
        description="int8: dynamic int8 quantisation of every Linear layer (torch.ao, CPU only); "
        "outputs differ from float32 and are recorded apart.",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps ...")
    trust_remote_code: bool = Field(False, description="Run code shipped with the model.")
    allow_pickle: bool = Field(False, description="Allow .bin (pickle) weights, not only safetensors.")
    merge_adapter: bool = Field(False, description="Merge a LoRA adapter into the weights (faster).")
    score_batch_size: int = Field(16, ge=1, description="Batch size for log-likelihood scoring.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's).")
    share_prefill: bool = Field(
        True,
        description="Prefill once what the prompts of a batch share (a common prefix, the draws of "
        "one prompt) and reuse its KV cache; outputs are the same either way.",
    )
    continuous: bool = Field(
        True,
        description="Continuous batching: a row leaves the batch the step it finishes and a waiting "
        "prompt takes its place; false decodes fixed batches until their longest row stops. "
        "Outputs are the same either way.",
    )


class HFBackend(Backend):
    """transformers AutoModelForCausalLM (+ peft adapter), batched and cached."""

    name = "hf"
    description = "transformers causal LM from a local directory, optionally with a peft adapter"
    Options = HFOptions
    speed_only_options = frozenset(
        {"batch_size", "score_batch_size", "threads", "share_prefill", "continuous"}
    )

    def __init__(self, spec: ModelSpec, options: BaseModel):
        super().__init__(spec, options)
        import torch
        from transformers import AutoTokenizer

        opts: HFOptions = options  # type: ignore[assignment]
        if opts.threads:
            torch.set_num_threads(opts.threads)
        self.model_dir = resolve_model_dir(spec.path)
        if not (self.model_dir / "config.json").is_file():
            raise ConfigError(
                f"{self.model_dir} is a peft adapter, not a model; use --model BASE --adapter {self.model_dir}"
            )
        # Checked here, before the run is recorded: a checkpoint that cannot load is one line.
        check_model_dir(
            self.model_dir, allow_pickle=opts.allow_pickle, trust_remote_code=opts.trust_remote_code
        )
        self.adapter_dir = resolve_adapter_dir(spec.adapter) if spec.adapter else None
        if self.adapter_dir is not None:
            check_adapter_dir(self.adapter_dir, self.model_dir, allow_pickle=opts.allow_pickle)
        self.device = _pick_device(opts.device)
        self.dtype = _pick_dtype(opts.dtype, self.device)
        if opts.quantize == "int8" and (self.device.type != "cpu" or self.dtype != torch.float32):
            raise ConfigError(
                f"-o quantize=int8 runs on CPU in float32 (torch dynamic quantisation); got device "
                f"{self.device}, dtype {str(self.dtype).removeprefix('torch.')}"
            )
        if self.dtype == torch.bfloat16 and self.device.type == "cpu" and not _cpu_has_bf16():
            log.warning("this CPU has no bfloat16 instructions: -o dtype=bfloat16 is emulated and slow")
        self._model_hash = checkpoint_content_hash(self.model_dir)
        self._adapter_hash = checkpoint_content_hash(self.adapter_dir) if self.adapter_dir else None

        self.tokenizer = AutoTokenizer.from_pretrained(
            self.model_dir, trust_remote_code=opts.trust_remote_code
        )
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._model: Any = None  # loaded on first use: a run served from the cache never loads it
        self._auto_gpu_batch = opts.batch_size == "auto" and self.device.type == "cuda"
        self.batch_size: int | None = None if self._auto_gpu_batch else _initial_batch_size(opts.batch_size)
        """Rows per batch; with auto on a GPU, decided at each call from the free memory."""
        self._fits_tokens: int | None = None
        """Rows x tokens of the last batch that had to be halved to fit (auto on GPU)."""
        self._fillable_cache: bool | None = None  # decided once the model is loaded
        self._stop_criteria: dict[tuple[str, ...], Any] = {}
        self.stats: dict[str, float] = {
            "batches": 0,
            "tokens": 0,
            "seconds": 0.0,
            "padding_share": 0.0,  # of the prompt positions of the last generate call
            "padded_tokens": 0,
            "prompt_tokens": 0,
            "prefill_positions": 0,  # prompt positions the model computed
            "prefill_positions_saved": 0,  # and those a shared prefill spared it
            "decode_steps": 0,
            "row_steps": 0,  # rows decoded, summed over the steps
            "finished_row_steps": 0,  # of which rows that had already finished
            "finished_share": 0.0,  # finished_row_steps / row_steps of the last generate call
        }

    @property
    def model(self) -> Any:
        if self._model is None:
            from transformers import AutoModelForCausalLM

            opts: HFOptions = self.options  # type: ignore[assignment]
            model = AutoModelForCausalLM.from_pretrained(
                self.model_dir,
                dtype=self.dtype,
                trust_remote_code=opts.trust_remote_code,
                use_safetensors=None if opts.allow_pickle else True,
            )
            if self.adapter_dir is not None:
                from peft import PeftModel

                from harness import quiet_peft_version_skew

                with quiet_peft_version_skew():
                    model = PeftModel.from_pretrained(model, self.adapter_dir, adapter_name=self._adapter_name)
                if opts.merge_adapter:
                    model = model.merge_and_unload()
            model = model.to(self.device).eval()
            if opts.quantize == "int8":
                model = _quantize_int8(model)
            self._model = model
        return self._model

    @property
    def _adapter_name(self) -> str:
        """The name peft holds the current adapter under: its content hash, so that an
        adapter switched to twice is loaded once."""
        assert self._adapter_hash is not None
        return self._adapter_hash[:16]

    def check_adapter(self, adapter: str) -> Path:
        """The directory of an adapter `switch_adapter` can take, or a clear error."""
        opts: HFOptions = self.options  # type: ignore[assignment]
        for option, value in (("merge_adapter", opts.merge_adapter), ("quantize", opts.quantize != "none")):
            if value:
                raise ConfigError(
                    f"-o {option} changes the weights one adapter is loaded on: it cannot switch between "
                    f"several --adapter; drop {option}"
                )
        return resolve_adapter_dir(adapter)

    def switch_adapter(self, adapter: str) -> None:
        """Put another peft adapter on the same base without loading the base again: peft
        keeps every adapter loaded so far (`load_adapter`) and `set_adapter` makes one
        active. Outputs are those of a backend loaded with that adapter alone."""
        directory = self.check_adapter(adapter)
        self.adapter_dir, self._adapter_hash = directory, checkpoint_content_hash(directory)
        self.spec = replace(self.spec, adapter=adapter)
        if self._model is None:
            return  # loaded with this adapter on first use
        from peft import PeftModel

        from harness import quiet_peft_version_skew

        with quiet_peft_version_skew():
            if not isinstance(self._model, PeftModel):
                self._model = PeftModel.from_pretrained(self._model, directory, adapter_name=self._adapter_name)
            elif self._adapter_name not in self._model.peft_config:
                self._model.load_adapter(directory, adapter_name=self._adapter_name)
        self._model.set_adapter(self._adapter_name)
        self._model.eval()

    # -- description ------------------------------------------------------------

    @property
    def checkpoint_hash(self) -> str:
        return checkpoint_hash(self._model_hash, self._adapter_hash)

    @property
    def output_hash(self) -> str:
        opts: HFOptions = self.options  # type: ignore[assignment]
        numerics = {"dtype": str(self.dtype).removeprefix("torch."), "quantize": opts.quantize}
        if numerics == {"dtype": "float32", "quantize": "none"}:
            return self.checkpoint_hash  # the cache keys of float32 runs stay what they were
        return hashlib.sha256(json.dumps([self.checkpoint_hash, numerics], sort_keys=True).encode()).hexdigest()

    @property
    def model_hash(self) -> str:
        return self._model_hash

    @property
    def adapter_hash(self) -> str | None:
        return self._adapter_hash

    def describe(self) -> dict[str, Any]:
        config = json.loads((self.model_dir / "config.json").read_text())
        return {
            "path": str(self.model_dir),
            "adapter": str(self.adapter_dir) if self.adapter_dir else None,
            "architecture": (config.get("architectures") or [config.get("model_type", "?")])[0],
            "dtype": str(self.dtype).removeprefix("torch."),
            "quantize": self.options.quantize,  # type: ignore[attr-defined]
            "device": str(self.device),
        }

    @property
    def context_length(self) -> int | None:
        config = json.loads((self.model_dir / "config.json").read_text())
        value = config.get("max_position_embeddings") or config.get("n_positions")
        return int(value) if isinstance(value, int) and value > 0 else None

    def chat_template(self) -> Callable[[list[dict[str, str]]], str] | None:
        if not getattr(self.tokenizer, "chat_template", None):
            return None

        def apply(messages: list[dict[str, str]]) -> str:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )

        return apply

    # -- generation -------------------------------------------------------------

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
        """`order` through one continuous batch (plugins/backends/hf/continuous.py); after an
        out-of-memory error, what has not finished starts again at half the rows."""
        import torch

        eos_ids = _eos_ids(self.tokenizer, self.model)
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
                Row(i, encoded[i], _seeded(seeds[i] if seeds is not None else config.seed) if sampler else None)
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
        input_ids, attention = _layout(prompts, plan.prefix if plan else 0, self.tokenizer.pad_token_id)
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
                _prefill(self.model, input_ids[:, head], attention[:, head], positions[:, head], cache)
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

        A fixed size (given, or the CPU default) stays as it is, halved for good after an
        out-of-memory error. With batch_size=auto on a GPU the size comes from the free
        memory and the longest sequence of the call, capped by the token budget of the
        last batch that had to be halved (the largest that is known to fit)."""
        if not self._auto_gpu_batch:
            assert self.batch_size is not None
            return self.batch_size
        tokens = longest_prompt + config.max_new_tokens
        model = self.model  # loaded first: the weights' memory is not free any more
        size = fit_batch_size(_free_gpu_bytes(self.device), bytes_per_row(model.config, tokens, self.dtype))
        if self._fits_tokens is not None:
            size = min(size, max(1, self._fits_tokens // tokens))
        self.batch_size = size
        return size

    def _remember_fit(self, size: int, tokens: int) -> None:
        self.batch_size = size
        if self._auto_gpu_batch:
            self._fits_tokens = size * tokens

    def _generate_batch(
        self, batch: list[list[int]], config: GenerationConfig, seeds: list[int] | None
    ) -> tuple[list[tuple[str, str, int]], BatchCounts]:
        import torch
        from transformers import GenerationConfig as HFGenerationConfig
        from transformers import LogitsProcessorList, StoppingCriteriaList

        pad_id = self.tokenizer.pad_token_id
        eos_ids = _eos_ids(self.tokenizer, self.model)
        plan = SharedPrefill.plan(batch) if self._can_share_prefill() else None
        prefix = plan.prefix if plan else 0
        input_ids, attention = _layout(batch, prefix, pad_id)
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
        opts: HFOptions = self.options  # type: ignore[assignment]
        return opts.share_prefill and self._can_fill_cache()

    def _continuous(self) -> bool:
        opts: HFOptions = self.options  # type: ignore[assignment]
        return opts.continuous and self._can_fill_cache()

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

    # -- scoring ----------------------------------------------------------------

    def loglikelihood(
        self,
        contexts: Sequence[str],
        continuations: Sequence[str],
        *,
        progress: Progress | None = None,
    ) -> list[tuple[float, int]]:
        import torch

        opts: HFOptions = self.options  # type: ignore[assignment]
        pairs = []
        for context, continuation in zip(contexts, continuations, strict=True):
            ctx = self.tokenizer(context, add_special_tokens=False)["input_ids"]
            cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            pairs.append((ctx, cont))
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        results: list[tuple[float, int]] = [(0.0, 0)] * len(pairs)
        pad_id = self.tokenizer.pad_token_id
        for start in range(0, len(order), opts.score_batch_size):
            batch = order[start : start + opts.score_batch_size]
            seqs = [pairs[i][0] + pairs[i][1] for i in batch]
            width = max(len(s) for s in seqs)
            # Right padding keeps position ids correct for a plain forward pass.
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, seq in enumerate(seqs):
                ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            for row, index in enumerate(batch):
                ctx, cont = pairs[index]
                if not cont:
                    results[index] = (0.0, 0)
                    continue
                # logits at position t predict token t + 1
                first = max(len(ctx) - 1, 0)
                targets = torch.tensor(cont if ctx else cont[1:], device=logits.device)
                if targets.numel() == 0:
                    results[index] = (0.0, 0)
                    continue
                rows = logits[row, first : first + targets.numel()].float().log_softmax(-1)
                nll = -rows.gather(1, targets[:, None]).sum().item()
                results[index] = (nll, int(targets.numel()))
            if progress:
                progress(len(batch))
        return results

    def close(self) -> None:
        self._model = None
        self._stop_criteria.clear()


class PerRowSampler:
    """A logits processor that samples each row with its own seeded generator.

    It applies temperature, top-k and top-p, draws one token per row and returns
    logits that make greedy decoding pick exactly that token."""

    def __init__(self, config: GenerationConfig, seeds: Sequence[int]):

        self.config = config
        self.generators = [_seeded(seed) for seed in seeds]

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


def _quantize_int8(model: Any) -> Any:
    """Every Linear layer (the adapter's too) with int8 weights and dynamically quantised
    activations: torch.ao's dynamic quantisation, deprecated in torch but working on the
    CPUs it supports."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantiz.*deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*deprecated.*", module="torch.ao")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux: cannot tell, say nothing
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _seeded(seed: int) -> Any:
    import torch

    return torch.Generator().manual_seed(int(seed) % (2**63))


def _eos_ids(tokenizer: Any, model: Any) -> list[int]:
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return sorted(ids)


def _pick_device(requested: str) -> Any:
    import torch

    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _pick_dtype(requested: str, device: Any) -> Any:
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


CPU_BATCH_SIZE = 32
"""The auto batch size on CPU. bench/generation.py (greedy, 64 dictionary prompts,
SmolLM2-135M, fp32, 2 cores, static batches): 40 tok/s at 8, 61 at 16, 88 at 32, 108 at
64. Past 32 the gain shrinks while memory grows with rows x tokens; see bench/RESULTS.md."""


def _initial_batch_size(requested: int | str) -> int:
    if isinstance(requested, int):
        if requested < 1:
            raise ConfigError(f"batch_size must be at least 1, got {requested}")
        return requested
    return CPU_BATCH_SIZE


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


def _free_gpu_bytes(device: Any) -> int:
    import torch

    free, _ = torch.cuda.mem_get_info(device)
    # What torch's allocator holds but does not use is free to it as well.
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def _layout(batch: Sequence[Sequence[int]], prefix: int, pad_id: int) -> tuple[Any, Any]:
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
            _prefill(model, ids[:1, head], mask[:1, head], positions[:1, head], cache)
            cache.batch_repeat_interleave(len(self.distinct))
            start = self.prefix
        if end > start:
            _prefill(model, ids[:, start:end], mask[:, :end], positions[:, start:end], cache)
        cache.batch_select_indices(torch.tensor(self.rows, device=input_ids.device))
        return cache


def _prefill(model: Any, ids: Any, mask: Any, positions: Any, cache: Any) -> None:
    """One forward pass that appends `ids` to `cache`; `mask` covers the cache and `ids`."""
    model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        **{_cache_argument(model): cache},
        use_cache=True,
        logits_to_keep=1,  # the logits are not used; keep the LM head to one position
    )


@hookimpl
def harness_register_backends(registry: Any) -> None:
    registry.add_backend(HFBackend)
