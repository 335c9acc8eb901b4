"""The `openai` backend itself: what identifies a model behind a server (the pinned
revision or the server's /models entry), prompts for the completions or the chat
endpoint, generation, token counts, and log-likelihood scoring through `echo`. The HTTP
is `Transport`'s (`transport`)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from harness import (
    Backend,
    Completion,
    ConfigError,
    GenerationConfig,
    ModelSpec,
    Progress,
    PromptConfig,
    Sample,
    render_prompt,
    resolve_model_dir,
)
from harness.plugins.backends.openai.options import OpenAIOptions
from harness.plugins.backends.openai.protocol import (
    OpenAIServerError,
    first_choice,
    map_finish,
    messages_json,
    parse_messages,
)
from harness.plugins.backends.openai.transport import Transport

log = logging.getLogger(__name__)

NO_MODEL_LIST_STATUSES = frozenset({404, 405, 501})
"""Answers to GET /models that mean the server has no model list (the model is then known by name only)."""

MODEL_IDENTITY_FIELDS = ("id", "owned_by", "root", "parent", "revision", "meta")
"""Fields of a /models entry that identify the weights. `created` is left out on purpose:
vLLM and llama.cpp fill it with the time of the request, so it would change every run's hash."""

MAX_SEED = 2**31
"""Seeds are sent modulo this: llama.cpp reads a 32-bit seed, and every server accepts one this small."""


class OpenAIBackend(Backend):
    """Generates and scores through an OpenAI-compatible HTTP server."""

    name = "openai"
    description = "any OpenAI-compatible server (vLLM, TGI, llama.cpp, transformers serve, hosted APIs)"
    Options = OpenAIOptions
    speed_only_options = frozenset(
        {"max_concurrency", "timeout_s", "max_retries", "backoff_s", "max_backoff_s", "api_key_env"}
    )

    def __init__(self, spec: ModelSpec, options: BaseModel):
        super().__init__(spec, options)
        opts: OpenAIOptions = options  # type: ignore[assignment]
        self.opts = opts
        if spec.adapter:
            raise ConfigError(
                "the openai backend cannot load an adapter on a server: serve it under its own name "
                "(vllm serve BASE --enable-lora --lora-modules NAME=ADAPTER_DIR) and pass --model NAME"
            )
        self.base_url = opts.base_url
        self.model_name = opts.model or spec.path
        self.stats: dict[str, float] = {
            "requests": 0,
            "retries": 0,
            "completions": 0,
            "tokens": 0,
            "seconds": 0.0,
        }
        self.http = Transport(opts, self.model_name, self.stats)
        self._server_entry: dict[str, Any] | None = None
        self._server_looked_up = False
        self._hash: str | None = None
        self._tokenizer: Any = None

    # -- identity -----------------------------------------------------------------

    @property
    def checkpoint_hash(self) -> str:
        """The server has no weights to hash: (base_url, model name, and the pinned
        revision or what the server's /models says about the model). A cache keyed on a
        remote model is only as stable as that name."""
        if self._hash is None:
            identity: dict[str, Any] = {
                "backend": self.name,
                "base_url": self.base_url,
                "model": self.model_name,
            }
            if self.opts.revision is not None:
                identity["revision"] = self.opts.revision
            else:
                identity["server_model"] = self.server_model()
            self._hash = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return self._hash

    def server_model(self) -> dict[str, Any] | None:
        """The identifying fields of the model's entry in GET /models, or None when the
        server lists no models or not this one. Asked once; not asked when `revision` is set."""
        if self.opts.revision is not None:
            return None
        if not self._server_looked_up:
            self._server_entry = self.http.run(self._lookup_model)
            self._server_looked_up = True
        return self._server_entry

    async def _lookup_model(self) -> dict[str, Any] | None:
        async with self.http.client() as client:
            try:
                data, _ = await self.http.request(client, "GET", "models", None)
            except OpenAIServerError as exc:
                if exc.status in NO_MODEL_LIST_STATUSES:
                    return None
                raise OpenAIServerError(
                    f"{exc} (the model list makes the cache key; pin it with -o revision=NAME to skip asking)",
                    exc.status,
                    exc.attempts,
                ) from None
        entries = data.get("data") if isinstance(data, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and entry.get("id") == self.model_name:
                return {k: entry[k] for k in MODEL_IDENTITY_FIELDS if entry.get(k) is not None}
        log.info(
            "%s/models does not list %r: the cache key uses the name only", self.base_url, self.model_name
        )
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.model_name,
            "adapter": None,
            "base_url": self.base_url,
            "endpoint": self.opts.endpoint,
            "revision": self.opts.revision,
            "server_model": self.server_model(),
        }

    # -- prompts ------------------------------------------------------------------

    def chat_template(self) -> Callable[[list[dict[str, str]]], str] | None:
        """With the chat endpoint the server applies the template, so a "rendered" chat
        prompt is the request's messages as JSON: the cache key is exactly what is sent."""
        return messages_json if self.opts.endpoint == "chat" else None

    def format_prompt(self, sample: Sample, prompt: PromptConfig) -> str:
        if self.opts.endpoint == "chat":
            if prompt.format == "chat":
                return render_prompt(sample, prompt, messages_json)
            return messages_json([{"role": "user", "content": render_prompt(sample, prompt)}])
        if prompt.format == "chat":
            raise ConfigError(
                "prompt format 'chat' with the openai backend's completions endpoint: the server holds "
                "the chat template; pass -o endpoint=chat (or use format: instruction)"
            )
        return render_prompt(sample, prompt)

    # -- generation ---------------------------------------------------------------

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
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts")
        path = "chat/completions" if self.opts.endpoint == "chat" else "completions"
        bodies = [
            self._generation_body(prompt, config, seeds[i] if seeds is not None else config.seed)
            for i, prompt in enumerate(prompts)
        ]
        answers = self.http.run(lambda: self.http.post_all(path, bodies, progress))
        completions = [
            self._completion(data, latency, prompt, config)
            for prompt, (data, latency) in zip(prompts, answers, strict=True)
        ]
        self.stats["completions"] += len(completions)
        self.stats["tokens"] += sum(c.completion_tokens for c in completions)
        return completions

    def _generation_body(self, prompt: str, config: GenerationConfig, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model_name}
        if self.opts.endpoint == "chat":
            body["messages"] = parse_messages(prompt)
        else:
            body["prompt"] = prompt
        body["max_tokens"] = config.max_new_tokens
        body["temperature"] = config.temperature
        if not config.greedy:
            # Greedy decoding ignores these, and the cache key leaves the seed out for it.
            body["top_p"] = config.top_p
            body["seed"] = int(seed) % MAX_SEED
            if config.top_k:
                body["top_k"] = config.top_k  # not OpenAI's API; vLLM, TGI and llama.cpp accept it
        if config.stop:
            body["stop"] = list(config.stop)
        return body

    def _completion(self, data: Any, latency: float, prompt: str, config: GenerationConfig) -> Completion:
        choice = first_choice(data, self.http.scrub)
        if self.opts.endpoint == "chat":
            message = choice.get("message")
            raw = message.get("content") if isinstance(message, dict) else None
        else:
            raw = choice.get("text")
        if raw is not None and not isinstance(raw, str):
            raise OpenAIServerError(f"server at {self.base_url} answered a non-text completion: {raw!r:.200}")
        text, finish = map_finish(raw or "", choice, config.stop)
        prompt_tokens, completion_tokens = self._token_counts(data, prompt, text)
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish,
            latency_s=latency,
        )

    def _token_counts(self, data: Mapping[str, Any], prompt: str, text: str) -> tuple[int, int]:
        usage = data.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            prompt_tokens = usage.get("prompt_tokens")
            if isinstance(prompt_tokens, int):
                return prompt_tokens, usage["completion_tokens"]
        if self.opts.tokenizer is None:
            raise OpenAIServerError(
                f"server at {self.base_url} reports no token usage; pass -o tokenizer=DIR (a local "
                "tokenizer of the served model) to count tokens here"
            )
        tokenizer = self._local_tokenizer(self.opts.tokenizer)
        if self.opts.endpoint == "chat":
            # The server applied its chat template; the local one is the best stand-in.
            messages = parse_messages(prompt)
            if getattr(tokenizer, "chat_template", None):
                ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
                prompt_tokens = len(ids["input_ids"] if isinstance(ids, Mapping) else ids)
            else:
                prompt_tokens = count_tokens(tokenizer, "\n".join(m["content"] for m in messages))
        else:
            prompt_tokens = count_tokens(tokenizer, prompt)
        return prompt_tokens, count_tokens(tokenizer, text)

    def _local_tokenizer(self, name: str) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            directory = resolve_model_dir(name)
            self._tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        return self._tokenizer

    # -- scoring ------------------------------------------------------------------

    def loglikelihood(
        self,
        contexts: Sequence[str],
        continuations: Sequence[str],
        *,
        progress: Progress | None = None,
    ) -> list[tuple[float, int]]:
        """Scores through /completions with `echo` and `logprobs` (vLLM supports it): the
        server returns the log-probability of every prompt token, and the tokens that
        overlap the continuation are summed. The split is by character offset, so a token
        that straddles the boundary (" cat" after a context ending in a space) counts as
        continuation."""
        if self.opts.endpoint == "chat":
            raise OpenAIServerError(
                "the openai backend cannot score continuations through the chat endpoint (its prompts "
                "are message lists); use -o endpoint=completions with a server that supports "
                "echo + logprobs (vLLM) for perplexity"
            )
        pairs = list(zip(contexts, continuations, strict=True))
        bodies = [
            {
                "model": self.model_name,
                "prompt": context + continuation,
                "max_tokens": 1,  # some servers refuse 0; the generated token lies past the prompt and is dropped
                "temperature": 0.0,
                "echo": True,
                "logprobs": 1,
            }
            for context, continuation in pairs
        ]
        try:
            answers = self.http.run(lambda: self.http.post_all("completions", bodies, progress))
        except OpenAIServerError as exc:
            if exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
                raise OpenAIServerError(f"{exc}; {self._cannot_score()}", exc.status, exc.attempts) from None
            raise
        return [
            self._continuation_nll(data, context, continuation)
            for (context, continuation), (data, _) in zip(pairs, answers, strict=True)
        ]

    def _cannot_score(self) -> str:
        return (
            f"the server at {self.base_url} cannot score continuations (it returns no prompt logprobs "
            "for echo=true), so perplexity is unavailable with it: serve the model with vLLM, or use "
            "the hf backend for metrics that need the reference's likelihood"
        )

    def _continuation_nll(self, data: Any, context: str, continuation: str) -> tuple[float, int]:
        choice = first_choice(data, self.http.scrub)
        logprobs = choice.get("logprobs")
        full = context + continuation
        if (
            not isinstance(logprobs, dict)
            or not isinstance(choice.get("text"), str)
            or not choice["text"].startswith(full)
        ):
            raise OpenAIServerError(self._cannot_score())
        offsets = logprobs.get("text_offset")
        values = logprobs.get("token_logprobs")
        if not isinstance(offsets, list) or not isinstance(values, list) or len(offsets) != len(values):
            raise OpenAIServerError(self._cannot_score())
        if not continuation:
            return 0.0, 0
        nll, count = 0.0, 0
        for i, (start, value) in enumerate(zip(offsets, values)):
            if start >= len(full):
                break  # generated tokens follow the echoed prompt
            end = min(offsets[i + 1], len(full)) if i + 1 < len(offsets) else len(full)
            if end <= len(context) or value is None:
                continue  # context, or the first token (no logprob without something before it)
            nll -= float(value)
            count += 1
        return nll, count

    def close(self) -> None:
        self._tokenizer = None


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens of `text` by a local tokenizer (for a server that reports no usage)."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])
