"""The `hf` backend itself: a transformers causal language model loaded from a local
directory (optionally with a peft adapter, which it can switch without loading the base
again), what identifies it (content hashes of the weights, the numerics that change
outputs), and log-likelihood scoring. Generation is `BatchedGeneration` (`generation`)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness import (
    Backend,
    ConfigError,
    ModelSpec,
    Progress,
    check_adapter_dir,
    check_model_dir,
    checkpoint_content_hash,
    checkpoint_hash,
    resolve_adapter_dir,
    resolve_model_dir,
)
from harness.plugins.backends.hf.devices import (
    cpu_has_bf16,
    initial_batch_size,
    pick_device,
    pick_dtype,
    quantize_int8,
)
from harness.plugins.backends.hf.generation import BatchedGeneration

log = logging.getLogger(__name__)


class HFOptions(BaseModel):
    """Options of the `hf` backend (`--backend-option key=value`)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int | Literal["auto"] = Field(
        "auto",
        description="Prompts per batch; auto = the largest that fits in free memory (on CPU a quarter "
        "of the available RAM, at most 256 rows).",
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


class HFBackend(BatchedGeneration, Backend):
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
        self.device = pick_device(opts.device)
        self.dtype = pick_dtype(opts.dtype, self.device)
        if opts.quantize == "int8" and (self.device.type != "cpu" or self.dtype != torch.float32):
            raise ConfigError(
                f"-o quantize=int8 runs on CPU in float32 (torch dynamic quantisation); got device "
                f"{self.device}, dtype {str(self.dtype).removeprefix('torch.')}"
            )
        if self.dtype == torch.bfloat16 and self.device.type == "cpu" and not cpu_has_bf16():
            log.warning("this CPU has no bfloat16 instructions: -o dtype=bfloat16 is emulated and slow")
        self._model_hash = checkpoint_content_hash(self.model_dir)
        self._adapter_hash = checkpoint_content_hash(self.adapter_dir) if self.adapter_dir else None

        self.tokenizer = AutoTokenizer.from_pretrained(
            self.model_dir, trust_remote_code=opts.trust_remote_code
        )
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._model: Any = None  # loaded on first use: a run served from the cache never loads it
        self._auto_batch = opts.batch_size == "auto"
        self.batch_size: int | None = (
            None if opts.batch_size == "auto" else initial_batch_size(opts.batch_size)
        )
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
                model = quantize_int8(model)
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
