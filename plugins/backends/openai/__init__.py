"""`openai`: any server that speaks the OpenAI API (vLLM's `vllm serve`, TGI, llama.cpp's
`llama-server`, `transformers serve`, hosted APIs).

Requests go out concurrently (at most `max_concurrency` in flight) and come back in
prompt order. Failures that a later attempt can cure (HTTP 429/500/502/503/504, a
dropped connection, a timeout) are retried with exponential backoff and jitter, waiting
at least what a `Retry-After` header asks; any other 4xx stops at once with the status
and the server's message. Each prompt is one request, so a prompt is answered once.

The HTTP client is httpx2 (the maintained continuation of httpx, same API) driven by
asyncio, not the `openai` SDK: the backend needs two JSON POSTs and one GET, its retry
policy must be the only one (the SDK retries on its own unless told not to, with rules
of its own), and it reads fields that compatible servers add outside the SDK's types
(vLLM's `stop_reason`, prompt logprobs from `echo`). httpx2 already comes with
transformers (through huggingface_hub) and is what the `openai` SDK itself runs on.

The API key is read from the environment variable that `api_key_env` names; the key is
never an option, so it is never stored with a run, shown in a report or put in an error.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness import (
    Backend,
    Completion,
    ConfigError,
    FinishReason,
    GenerationConfig,
    HarnessError,
    ModelSpec,
    Progress,
    PromptConfig,
    Sample,
    hookimpl,
    render_prompt,
    resolve_model_dir,
)

if TYPE_CHECKING:
    import httpx2

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Statuses a later attempt can cure: rate limits and a server that is busy, restarting or behind a failing proxy."""

NO_MODEL_LIST_STATUSES = frozenset({404, 405, 501})
"""Answers to GET /models that mean the server has no model list (the model is then known by name only)."""

MODEL_IDENTITY_FIELDS = ("id", "owned_by", "root", "parent", "revision", "meta")
"""Fields of a /models entry that identify the weights. `created` is left out on purpose:
vLLM and llama.cpp fill it with the time of the request, so it would change every run's hash."""

MAX_SEED = 2**31
"""Seeds are sent modulo this: llama.cpp reads a 32-bit seed, and every server accepts one this small."""

T = TypeVar("T")


class OpenAIOptions(BaseModel):
    """Options of the `openai` backend (`--backend-option key=value`)."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field("http://127.0.0.1:8000/v1", description="The API root, up to and including /v1.")
    model: str | None = Field(None, description="Model name the server knows (default: --model).")
    api_key_env: str | None = Field(
        None, description="Name of the environment variable that holds the API key (never the key itself)."
    )
    endpoint: Literal["completions", "chat"] = Field(
        "completions", description="completions sends the rendered prompt; chat sends messages."
    )
    revision: str | None = Field(
        None, description="Pins the model's identity in the cache key instead of asking the server's /models."
    )
    max_concurrency: int = Field(8, ge=1, description="Requests in flight at once.")
    timeout_s: float = Field(120.0, gt=0, description="Per attempt: connect, send, and wait for the answer.")
    max_retries: int = Field(5, ge=0, description="Further attempts after a retryable failure.")
    backoff_s: float = Field(0.5, ge=0, description="Base delay; attempt n waits about backoff_s * 2**n.")
    max_backoff_s: float = Field(
        60.0, ge=0, description="Longest wait between attempts, Retry-After included."
    )
    tokenizer: str | None = Field(
        None, description="Local tokenizer directory to count tokens when the server reports no usage."
    )

    @field_validator("model", "revision", "tokenizer", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        # `-o revision=2024-06-01` arrives as a YAML date and `-o revision=3` as an int.
        return None if value is None else str(value)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https://, got {value!r}")
        return value.rstrip("/")


class OpenAIServerError(HarnessError):
    """The server refused a request, or kept failing after every retry."""

    def __init__(self, message: str, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.status = status
        self.attempts = attempts


class _Retryable(Exception):
    """One attempt failed in a way a later attempt may not."""

    def __init__(self, problem: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(problem)
        self.problem = problem
        self.status = status
        self.retry_after = retry_after


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
        self._api_key = _read_api_key(opts.api_key_env)
        self._rng = random.Random()
        self._server_entry: dict[str, Any] | None = None
        self._server_looked_up = False
        self._hash: str | None = None
        self._tokenizer: Any = None
        self.stats: dict[str, float] = {
            "requests": 0,
            "retries": 0,
            "completions": 0,
            "tokens": 0,
            "seconds": 0.0,
        }

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
            self._server_entry = self._run(self._lookup_model)
            self._server_looked_up = True
        return self._server_entry

    async def _lookup_model(self) -> dict[str, Any] | None:
        async with self._client() as client:
            try:
                data, _ = await self._request(client, "GET", "models", None)
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
        answers = self._run(lambda: self._post_all(path, bodies, progress))
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
        choice = _first_choice(data, self._scrub)
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
                prompt_tokens = _count(tokenizer, "\n".join(m["content"] for m in messages))
        else:
            prompt_tokens = _count(tokenizer, prompt)
        return prompt_tokens, _count(tokenizer, text)

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
            answers = self._run(lambda: self._post_all("completions", bodies, progress))
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
        choice = _first_choice(data, self._scrub)
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

    # -- transport ----------------------------------------------------------------

    def _run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine to completion from synchronous code, even inside a running
        event loop (a notebook), where it gets a thread of its own."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_as_coroutine(make))
        with ThreadPoolExecutor(1, thread_name_prefix="harness-openai") as pool:
            return pool.submit(asyncio.run, _as_coroutine(make)).result()

    def _client(self) -> httpx2.AsyncClient:
        import httpx2  # imported on first use: loading the plugin costs nothing

        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limit = self.opts.max_concurrency
        return httpx2.AsyncClient(
            base_url=self.base_url + "/",
            headers=headers,
            timeout=httpx2.Timeout(self.opts.timeout_s),
            limits=httpx2.Limits(max_connections=limit, max_keepalive_connections=limit),
        )

    async def _post_all(
        self, path: str, bodies: Sequence[dict[str, Any]], progress: Progress | None
    ) -> list[tuple[Any, float]]:
        """POST every body, at most `max_concurrency` at a time; answers in input order."""
        semaphore = asyncio.Semaphore(self.opts.max_concurrency)
        async with self._client() as client:

            async def one(body: dict[str, Any]) -> tuple[Any, float]:
                # The slot is held through backoff: a rate-limited client should not send more.
                async with semaphore:
                    answer = await self._request(client, "POST", path, body)
                if progress:
                    progress(1)
                return answer

            tasks = [asyncio.ensure_future(one(body)) for body in bodies]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                # One request failed for good: stop the others rather than let them run on.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    async def _request(
        self, client: httpx2.AsyncClient, method: str, path: str, body: dict[str, Any] | None
    ) -> tuple[Any, float]:
        """One call with the retry policy: (parsed JSON, seconds of the attempt that answered)."""
        attempts = self.opts.max_retries + 1
        url = f"{self.base_url}/{path}"
        for attempt in range(attempts):
            self.stats["requests"] += 1
            started = time.perf_counter()
            try:
                data = await self._attempt(client, method, path, body, url, attempt + 1)
            except _Retryable as failure:
                if attempt + 1 == attempts:
                    raise OpenAIServerError(
                        f"{method} {url} failed after {attempts} attempt(s): {failure.problem}",
                        status=failure.status,
                        attempts=attempts,
                    ) from None
                delay = retry_delay(attempt, failure.retry_after, self.opts, self._rng)
                self.stats["retries"] += 1
                log.warning("%s %s: %s; retrying in %.2fs", method, url, failure.problem, delay)
                await asyncio.sleep(delay)
                continue
            elapsed = time.perf_counter() - started
            self.stats["seconds"] += elapsed
            return data, elapsed
        raise AssertionError("unreachable: the loop returns or raises")

    async def _attempt(
        self,
        client: httpx2.AsyncClient,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        url: str,
        n: int,
    ) -> Any:
        import httpx2

        try:
            response = await client.request(method, path, json=body)
        except (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError) as exc:
            raise _Retryable(f"{type(exc).__name__}: {self._scrub(str(exc)) or 'no detail'}") from None
        except httpx2.RequestError as exc:  # a proxy refusing, a bad redirect: retrying will not help
            raise OpenAIServerError(
                f"{method} {url}: {type(exc).__name__}: {self._scrub(str(exc))}", attempts=n
            ) from None
        status = response.status_code
        if status in RETRY_STATUSES:
            raise _Retryable(
                f"HTTP {status}: {self._scrub(server_message(response))}",
                status,
                parse_retry_after(response.headers),
            )
        if not 200 <= status < 300:
            raise OpenAIServerError(
                f"the server at {self.base_url} answered HTTP {status} to {method} /{path}"
                f" (model {self.model_name!r}): {self._scrub(server_message(response))}",
                status=status,
                attempts=n,
            )
        try:
            return response.json()
        except ValueError:
            raise OpenAIServerError(
                f"the server at {self.base_url} answered {method} /{path} with something that is not "
                f"JSON: {self._scrub(response.text[:200])!r}",
                status=status,
                attempts=n,
            ) from None

    def _scrub(self, text: str) -> str:
        """Servers sometimes quote the credentials they were sent; the key never leaves here."""
        return text.replace(self._api_key, "***") if self._api_key else text

    def close(self) -> None:
        self._tokenizer = None


# ---------------------------------------------------------------------------
# Pure helpers (tested directly)
# ---------------------------------------------------------------------------


def messages_json(messages: list[dict[str, str]]) -> str:
    """Chat messages as the prompt string the cache keys on (and `parse_messages` reads)."""
    return json.dumps(messages, ensure_ascii=False)


def parse_messages(prompt: str) -> list[dict[str, str]]:
    """The messages of a chat prompt made by `messages_json`; any other text is one user message."""
    if prompt.startswith("["):
        try:
            value = json.loads(prompt)
        except ValueError:
            value = None
        if (
            isinstance(value, list)
            and value
            and all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in value
            )
        ):
            return value
    return [{"role": "user", "content": prompt}]


def map_finish(text: str, choice: Mapping[str, Any], stops: Sequence[str]) -> tuple[str, FinishReason]:
    """(text, finish reason) from a choice, the harness's way.

    Servers say "stop" both when the model emitted EOS and when a stop string matched:
    - a stop string in the text (transformers serve returns it) cuts the text there: "stop";
    - "length" is "length";
    - vLLM's `stop_reason` tells them apart (the matched string, or null/a token id for EOS);
      TGI says "eos_token" / "stop_sequence";
    - with no stop strings in the request, "stop" can only be EOS: "eos";
    - otherwise the server stripped what matched (OpenAI's rule) or the model ended, and
      nothing says which: it stays "stop", the server's word. Either way it ended early.
    """
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    if cut >= 0:
        return text[:cut], "stop"
    reported = choice.get("finish_reason")
    if reported == "length":
        return text, "length"
    if reported in ("eos", "eos_token"):
        return text, "eos"
    if reported == "stop_sequence":
        return text, "stop"
    if reported == "stop":
        if "stop_reason" in choice:
            return text, "stop" if isinstance(choice["stop_reason"], str) else "eos"
        return text, "stop" if stops else "eos"
    if reported in ("content_filter", "tool_calls", "function_call"):
        log.warning("server ended a completion with finish_reason %r; recorded as 'stop'", reported)
        return text, "stop"
    raise OpenAIServerError(
        f"server ended a completion with finish_reason {reported!r}, which the openai backend does not know"
    )


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI's) or `Retry-After` (seconds or an HTTP date)."""
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(float(milliseconds) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def retry_delay(attempt: int, retry_after: float | None, opts: OpenAIOptions, rng: random.Random) -> float:
    """Seconds before retry number `attempt + 1`: exponential with "equal jitter" (half
    fixed, half random, so clients that failed together do not return together), at least
    what Retry-After asks, never more than max_backoff_s."""
    ceiling = min(opts.max_backoff_s, opts.backoff_s * 2**attempt)
    delay = ceiling / 2 + rng.uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, opts.max_backoff_s)


def server_message(response: httpx2.Response) -> str:
    """The error text of a response: OpenAI's and vLLM's {"error": {"message"}}, TGI's
    {"error": "..."}, FastAPI's {"detail": ...}, or the start of the body."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("error", "detail", "message"):
            if data.get(key):
                value = data[key]
                return value if isinstance(value, str) else json.dumps(value)[:500]
    return json.dumps(data)[:500]


def _first_choice(data: Any, scrub: Callable[[str], str]) -> dict[str, Any]:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise OpenAIServerError(f"server answered without choices: {scrub(json.dumps(data))[:300]}")
    return choices[0]


def _count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _read_api_key(variable: str | None) -> str | None:
    if variable is None:
        return None
    key = os.environ.get(variable, "").strip()
    if not key:
        raise ConfigError(
            f"openai backend: environment variable {variable} (named by api_key_env) is not set or empty; "
            f"export {variable}=... before running"
        )
    return key


async def _as_coroutine(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


@hookimpl
def harness_register_backends(registry: Any) -> None:
    registry.add_backend(OpenAIBackend)
