"""What the `openai` backend sends and reads, apart from HTTP: chat messages as the
prompt string the cache keys on, a choice's text and finish reason the harness's way,
the error text of a response, and the error a server's refusal becomes."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from harness import FinishReason, HarnessError

if TYPE_CHECKING:
    import httpx2

log = logging.getLogger(__name__)


class OpenAIServerError(HarnessError):
    """The server refused a request, or kept failing after every retry."""

    def __init__(self, message: str, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.status = status
        self.attempts = attempts


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


def first_choice(data: Any, scrub: Callable[[str], str]) -> dict[str, Any]:
    choices = data.get("choices") if isinstance(data, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise OpenAIServerError(f"server answered without choices: {scrub(json.dumps(data))[:300]}")
    return choices[0]
