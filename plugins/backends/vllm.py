"""`vllm`: vLLM in this process, for GPU users (`pip install 'harness-loop[vllm]'`).

vLLM schedules rows continuously and pages its KV cache on the GPU; this backend hands
it a call's prompts as token ids at once and reads back text, token counts and finish
reasons. A LoRA adapter is served through vLLM's LoRA support (`enable_lora`), the base
loaded once. Greedy decoding is vLLM's own (temperature 0); sampled draws carry one
seed per prompt, so a sample's draw does not depend on its batch. `loglikelihood` reads
vLLM's prompt log-probabilities.

vLLM is imported when the backend is created, never at plugin load: without it,
`harness eval --backend vllm` stops with one line naming the extra to install.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from harness import (
    Backend,
    Completion,
    ConfigError,
    GenerationConfig,
    ModelSpec,
    Progress,
    checkpoint_content_hash,
    checkpoint_hash,
    hookimpl,
    resolve_adapter_dir,
    resolve_model_dir,
)


class VLLMOptions(BaseModel):
    """Options of the `vllm` backend (`--backend-option key=value`)."""

    model_config = ConfigDict(extra="forbid")

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="vLLM's dtype (auto: the checkpoint's, bfloat16 for float32 weights)."
    )
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Share of GPU memory vLLM may take.")
    max_model_len: int | None = Field(None, ge=16, description="Longest prompt + output (default: the model's).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split over.")
    max_lora_rank: int = Field(64, ge=1, description="Largest LoRA rank vLLM reserves room for.")
    enforce_eager: bool = Field(False, description="No CUDA graphs (slower; starts faster).")
    trust_remote_code: bool = False


class VLLMBackend(Backend):
    """vLLM's offline `LLM` engine, in-process."""

    name = "vllm"
    description = "vLLM in this process (GPU), optionally with a LoRA adapter"
    Options = VLLMOptions
    speed_only_options = frozenset({"gpu_memory_utilization", "enforce_eager"})

    def __init__(self, spec: ModelSpec, options: BaseModel):
        super().__init__(spec, options)
        opts: VLLMOptions = options  # type: ignore[assignment]
        vllm = _import_vllm()
        self.model_dir = resolve_model_dir(spec.path)
        if not (self.model_dir / "config.json").is_file():
            raise ConfigError(
                f"{self.model_dir} is a peft adapter, not a model; use --model BASE --adapter {self.model_dir}"
            )
        self.adapter_dir = resolve_adapter_dir(spec.adapter) if spec.adapter else None
        self._model_hash = checkpoint_content_hash(self.model_dir)
        self._adapter_hash = checkpoint_content_hash(self.adapter_dir) if self.adapter_dir else None
        self._llm = vllm.LLM(
            model=str(self.model_dir),
            dtype=opts.dtype,
            gpu_memory_utilization=opts.gpu_memory_utilization,
            max_model_len=opts.max_model_len,
            tensor_parallel_size=opts.tensor_parallel_size,
            enable_lora=self.adapter_dir is not None,
            max_lora_rank=opts.max_lora_rank,
            enforce_eager=opts.enforce_eager,
            trust_remote_code=opts.trust_remote_code,
            seed=0,
        )
        self.tokenizer = self._llm.get_tokenizer()
        self.dtype = str(self._llm.llm_engine.model_config.dtype).removeprefix("torch.")

    # -- description ------------------------------------------------------------

    @property
    def checkpoint_hash(self) -> str:
        return checkpoint_hash(self._model_hash, self._adapter_hash)

    @property
    def output_hash(self) -> str:
        import hashlib

        # vLLM's kernels are not the hf backend's: its outputs are cached apart, by dtype.
        return hashlib.sha256(json.dumps([self.checkpoint_hash, "vllm", self.dtype]).encode()).hexdigest()

    @property
    def model_hash(self) -> str:
        return self._model_hash

    @property
    def adapter_hash(self) -> str | None:
        return self._adapter_hash

    def describe(self) -> dict[str, Any]:
        config = json.loads((self.model_dir / "config.json").read_text())
        vllm = _import_vllm()
        return {
            "path": str(self.model_dir),
            "adapter": str(self.adapter_dir) if self.adapter_dir else None,
            "architecture": (config.get("architectures") or [config.get("model_type", "?")])[0],
            "dtype": self.dtype,
            "vllm": getattr(vllm, "__version__", "?"),
        }

    def chat_template(self) -> Any:
        if not getattr(self.tokenizer, "chat_template", None):
            return None

        def apply(messages: list[dict[str, str]]) -> str:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

        return apply

    # -- generation -------------------------------------------------------------

    def _lora(self) -> Any:
        if self.adapter_dir is None:
            return None
        from vllm.lora.request import LoRARequest

        assert self._adapter_hash is not None
        return LoRARequest(self._adapter_hash[:16], 1, str(self.adapter_dir))

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
        encoded = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        params = [self._sampling(config, seeds[i] if seeds is not None else config.seed) for i in range(len(prompts))]
        started = time.perf_counter()
        outputs = self._llm.generate(
            [{"prompt_token_ids": ids} for ids in encoded], params, lora_request=self._lora(), use_tqdm=False
        )
        share = (time.perf_counter() - started) / len(prompts)
        completions = [self._completion(ids, out.outputs[0], config, share) for ids, out in zip(encoded, outputs)]
        if progress:
            progress(len(prompts))
        return completions

    def _sampling(self, config: GenerationConfig, seed: int) -> Any:
        from vllm import SamplingParams

        if config.greedy:
            return SamplingParams(temperature=0.0, max_tokens=config.max_new_tokens, stop=list(config.stop) or None)
        return SamplingParams(
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=config.top_k or -1,
            seed=int(seed) % (2**63),
            max_tokens=config.max_new_tokens,
            stop=list(config.stop) or None,
        )

    @staticmethod
    def _completion(prompt: list[int], output: Any, config: GenerationConfig, seconds: float) -> Completion:
        # vLLM: finish_reason "stop" for EOS (stop_reason None or a token id) or a stop
        # string (stop_reason that string, cut from the text), "length" at the limit.
        if output.finish_reason == "length":
            finish = "length"
        elif isinstance(output.stop_reason, str):
            finish = "stop"
        else:
            finish = "eos"
        return Completion(
            text=output.text,
            prompt_tokens=len(prompt),
            completion_tokens=len(output.token_ids),
            finish_reason=finish,
            latency_s=seconds,
        )

    # -- scoring ----------------------------------------------------------------

    def loglikelihood(
        self,
        contexts: Sequence[str],
        continuations: Sequence[str],
        *,
        progress: Progress | None = None,
    ) -> list[tuple[float, int]]:
        from vllm import SamplingParams

        pairs = []
        for context, continuation in zip(contexts, continuations, strict=True):
            ctx = self.tokenizer(context, add_special_tokens=False)["input_ids"]
            cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            pairs.append((ctx, cont))
        params = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=0)
        outputs = self._llm.generate(
            [{"prompt_token_ids": ctx + cont} for ctx, cont in pairs], params,
            lora_request=self._lora(), use_tqdm=False,
        )
        results = []
        for (ctx, cont), out in zip(pairs, outputs):
            # prompt_logprobs[t] holds the log-probability of token t given the ones before
            # it (None for the first token, which nothing predicts).
            start = max(len(ctx), 1)
            tokens = (ctx + cont)[start:]
            logprobs = out.prompt_logprobs[start:]
            nll = -sum(step[token].logprob for token, step in zip(tokens, logprobs))
            results.append((float(nll), len(tokens)))
        if progress:
            progress(len(pairs))
        return results

    def close(self) -> None:
        self._llm = None


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError(
            f"backend 'vllm' needs the vllm package ({exc.name or 'vllm'} is not importable): "
            "pip install 'harness-loop[vllm]' on a machine with a CUDA GPU, or use --backend hf"
        ) from None
    return vllm


@hookimpl
def harness_register_backends(registry: Any) -> None:
    registry.add_backend(VLLMBackend)
