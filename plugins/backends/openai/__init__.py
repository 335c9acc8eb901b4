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

The package, by job: `backend` (`OpenAIBackend`: identity, prompts, generation, token
counts, scoring), `transport` (HTTP: concurrency, the retry policy, the key),
`protocol` (chat messages, finish reasons, servers' error texts, `OpenAIServerError`)
and `options` (`OpenAIOptions`).
"""

from typing import Any

from harness import hookimpl
from harness.plugins.backends.openai.backend import MODEL_IDENTITY_FIELDS, OpenAIBackend
from harness.plugins.backends.openai.options import OpenAIOptions
from harness.plugins.backends.openai.protocol import (
    OpenAIServerError,
    map_finish,
    messages_json,
    parse_messages,
    server_message,
)
from harness.plugins.backends.openai.transport import RETRY_STATUSES, parse_retry_after, retry_delay

__all__ = [
    "MODEL_IDENTITY_FIELDS",
    "RETRY_STATUSES",
    "OpenAIBackend",
    "OpenAIOptions",
    "OpenAIServerError",
    "harness_register_backends",
    "map_finish",
    "messages_json",
    "parse_messages",
    "parse_retry_after",
    "retry_delay",
    "server_message",
]


@hookimpl
def harness_register_backends(registry: Any) -> None:
    registry.add_backend(OpenAIBackend)
