"""The `openai` backend against a scripted fault server on loopback (retries, order,
timeouts, fast failures, secrets) and against a real `transformers serve` on the tiny model."""

from __future__ import annotations

import importlib.util
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest

from harness.components.plugin_manager import load_plugins
from harness.errors import ConfigError, HarnessError
from harness.plugins.backends.openai import (
    OpenAIOptions,
    OpenAIServerError,
    map_finish,
    messages_json,
    parse_messages,
    parse_retry_after,
    retry_delay,
)
from harness.report.render import FORMATS, render
from harness.report.show import build_report
from harness.score.evaluate import evaluate, load_backend
from harness.store import Store
from harness.suite.load import load_suite
from harness.suite.prompts import PromptConfig
from harness.testing import echo_input, sample
from harness.types import GenerationConfig, ModelSpec

DATA = Path(__file__).parent / "data"
SECRET = "sk-harness-test-5f3c9a1e7b2d"
KEY_ENV = "HARNESS_TEST_OPENAI_KEY"


# ---------------------------------------------------------------------------
# A scripted OpenAI-compatible server on loopback
# ---------------------------------------------------------------------------

Action = str
"""ok | drop (close before answering) | truncate (half a 200 body, then close) | hang (never
answer, then close) | 500 | 503 | 429 | 429:SECONDS (with Retry-After) | 400 (echoes the auth header)."""


def default_answer(body: dict[str, Any]) -> dict[str, Any]:
    """A completion whose text names the prompt, so order and content can be checked."""
    if "messages" in body:
        content = body["messages"][-1]["content"]
        choice: dict[str, Any] = {"message": {"role": "assistant", "content": f"re: {content}"}}
    else:
        choice = {"text": f"re: {body['prompt']}"}
    choice.update(index=0, finish_reason="stop")
    prompt = body.get("prompt") or json.dumps(body.get("messages"))
    return {
        "object": "text_completion",
        "choices": [choice],
        "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": 3, "total_tokens": 0},
    }


class FaultServer:
    """Fails each request as `script(key, attempt)` says (key: the prompt, or the last chat
    message), then answers with `answer(body)`; counts attempts and answers per key."""

    def __init__(self) -> None:
        self.script: Callable[[str, int], Action] = lambda key, attempt: "ok"
        self.answer: Callable[[dict[str, Any]], dict[str, Any]] = default_answer
        self.models: tuple[int, dict[str, Any]] = (200, {"object": "list", "data": []})
        self.ok_delay_s = 0.0
        self.attempts: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.actions: list[tuple[str, Action, float]] = []
        self.bodies: list[dict[str, Any]] = []
        self.auth_headers: list[str | None] = []
        self.model_lookups = 0
        self.in_flight = self.peak = 0
        self._lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def start(self) -> FaultServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def begin(self, body: dict[str, Any], auth: str | None) -> tuple[str, Action]:
        key = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
        with self._lock:
            self.attempts[key] += 1
            action = self.script(key, self.attempts[key])
            self.actions.append((key, action, time.monotonic()))
            self.bodies.append(body)
            self.auth_headers.append(auth)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        return key, action

    def end(self, key: str, answered: bool) -> None:
        with self._lock:
            self.in_flight -= 1
            if answered:
                self.answered[key] += 1


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client hanging up is part of the script
            super().handle_error(request, client_address)


def _handler_for(fault: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers: drops hit pooled connections

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()

        def _hang_up(self) -> None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        def do_GET(self) -> None:
            with fault._lock:
                fault.model_lookups += 1
            status, payload = fault.models
            self._send(status, payload)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            key, action = fault.begin(body, self.headers.get("Authorization"))
            answered = False
            try:
                if action == "ok":
                    time.sleep(fault.ok_delay_s)
                    self._send(200, fault.answer(body))
                    answered = True
                elif action == "drop":
                    self._hang_up()
                elif action == "truncate":
                    data = json.dumps(fault.answer(body)).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self._hang_up()
                elif action == "hang":
                    time.sleep(2.0)
                    self._hang_up()
                elif action.startswith("429:"):
                    self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": action[4:]})
                elif action in ("429", "500", "503"):
                    self._send(int(action), {"error": {"message": f"scripted {action}", "type": "server"}})
                elif action == "400":
                    auth = self.headers.get("Authorization")
                    self._send(400, {"error": {"message": f"max_tokens is too large (you sent {auth})"}})
                else:
                    raise AssertionError(f"unknown action {action!r}")
            except OSError:
                pass  # the client went away first
            finally:
                fault.end(key, answered)

    return Handler


@pytest.fixture
def server() -> Iterator[FaultServer]:
    fault = FaultServer().start()
    yield fault
    fault.stop()


@pytest.fixture(scope="module")
def plugins():
    return load_plugins(autoload=False)


@pytest.fixture(autouse=True)
def _loopback_without_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the environment must not intercept loopback traffic.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def make(server: FaultServer, plugins, path: str = "tiny-served", **options: Any):
    options = {"base_url": server.base_url, "backoff_s": 0.001, "max_retries": 3, **options}
    return load_backend(ModelSpec(path=path, backend="openai", options=options), plugins.registry)


# ---------------------------------------------------------------------------
# Retries, order, concurrency
# ---------------------------------------------------------------------------


def test_faults_are_retried_and_every_prompt_is_answered_exactly_once(server, plugins) -> None:
    prompts = [f"prompt number {i}" for i in range(24)]
    first = ["drop", "truncate", "500", "429:0", "503", "ok"]

    def script(key: str, attempt: int) -> Action:
        i = int(key.rsplit(" ", 1)[1])
        if attempt == 1:
            return first[i % len(first)]
        if attempt == 2 and i % 2 == 0 and first[i % len(first)] != "ok":
            return "drop"  # a second failure in a row for half of them
        return "ok"

    server.script = script
    server.ok_delay_s = 0.02  # long enough for requests to overlap
    backend = make(server, plugins, max_concurrency=4)
    done: list[int] = []
    out = backend.generate(prompts, GenerationConfig(max_new_tokens=5), progress=done.append)

    assert [c.text for c in out] == [f"re: {p}" for p in prompts]  # one each, in prompt order
    assert all(c.finish_reason == "eos" and c.completion_tokens == 3 and c.prompt_tokens == 3 for c in out)
    assert sum(done) == len(prompts)
    assert server.answered == Counter(prompts)  # none answered twice, none lost
    expected = {p: 1 if i % 6 == 5 else (3 if i % 2 == 0 else 2) for i, p in enumerate(prompts)}
    assert server.attempts == Counter(expected)
    assert backend.stats["requests"] == sum(expected.values())
    assert backend.stats["retries"] == sum(expected.values()) - len(prompts)
    assert 2 <= server.peak <= 4


def test_a_timeout_is_retried(server, plugins) -> None:
    server.script = lambda key, attempt: "hang" if key == "slow" and attempt == 1 else "ok"
    backend = make(server, plugins, timeout_s=0.5)
    out = backend.generate(["fast", "slow"], GenerationConfig())
    assert [c.text for c in out] == ["re: fast", "re: slow"]
    assert server.attempts["slow"] == 2 and server.answered == Counter(["fast", "slow"])


def test_retry_after_is_honoured(server, plugins) -> None:
    server.script = lambda key, attempt: "429:1" if attempt == 1 else "ok"
    make(server, plugins, backoff_s=0.0).generate(["p"], GenerationConfig())
    (_, _, failed_at), (_, _, retried_at) = server.actions
    assert retried_at - failed_at >= 0.95


def test_a_client_error_fails_fast_with_the_servers_message(server, plugins, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.script = lambda key, attempt: "400" if key == "bad" else "ok"
    backend = make(server, plugins, api_key_env=KEY_ENV)
    with pytest.raises(
        OpenAIServerError, match=r"HTTP 400 to POST /completions.*max_tokens is too large"
    ) as info:
        backend.generate(["good", "bad", "good too"], GenerationConfig())
    assert info.value.status == 400 and server.attempts["bad"] == 1
    assert server.auth_headers[0] == f"Bearer {SECRET}"  # the key was sent ...
    assert SECRET not in str(info.value) and "Bearer ***" in str(info.value)  # ... and not repeated


def test_retries_run_out_with_the_last_problem_named(server, plugins) -> None:
    server.script = lambda key, attempt: "503"
    with pytest.raises(
        OpenAIServerError, match=r"failed after 3 attempt\(s\): HTTP 503: scripted 503"
    ) as info:
        make(server, plugins, max_retries=2).generate(["p"], GenerationConfig())
    assert info.value.status == 503 and server.attempts["p"] == 3


def test_a_server_that_is_not_there_is_retried_then_named(plugins) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    spec = ModelSpec(
        "m",
        backend="openai",
        options={
            "base_url": f"http://127.0.0.1:{port}/v1",
            "revision": "r1",
            "backoff_s": 0.001,
            "max_retries": 2,
        },
    )
    backend = load_backend(spec, plugins.registry)
    with pytest.raises(OpenAIServerError, match=r"failed after 3 attempt\(s\): ConnectError"):
        backend.generate(["p"], GenerationConfig())
    assert backend.stats["requests"] == 3


def test_retry_delays_grow_with_jitter_and_respect_retry_after() -> None:
    opts = OpenAIOptions(backoff_s=1.0, max_backoff_s=10.0)
    rng = random.Random(0)
    for attempt, ceiling in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 10.0)]:
        delays = [retry_delay(attempt, None, opts, rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # jittered, not fixed
    assert retry_delay(0, 7.0, opts, rng) == 7.0  # the server's wait beats a shorter backoff
    assert retry_delay(0, 90.0, opts, rng) == 10.0  # but never beyond max_backoff_s
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "3"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert 55 < parse_retry_after({"retry-after": _http_date(time.time() + 60)}) <= 60  # type: ignore[operator]
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def _http_date(when: float) -> str:
    import email.utils

    return email.utils.formatdate(when, usegmt=True)


# ---------------------------------------------------------------------------
# What is sent and how answers are read
# ---------------------------------------------------------------------------


def test_decoding_parameters_and_per_sample_seeds_reach_the_api(server, plugins) -> None:
    backend = make(server, plugins, model="served-name")
    backend.generate(["a", "b"], GenerationConfig(max_new_tokens=7, stop=("###",)), seeds=[1, 2])
    greedy = {body["prompt"]: body for body in server.bodies[:2]}  # concurrent: any order
    assert greedy["a"] == {
        "model": "served-name",
        "prompt": "a",
        "max_tokens": 7,
        "temperature": 0.0,
        "stop": ["###"],
    }
    sampling = GenerationConfig(max_new_tokens=3, temperature=0.7, top_p=0.9, top_k=20)
    backend.generate(["a", "b"], sampling, seeds=[5, 2**40 + 6])
    sent = {body["prompt"]: body for body in server.bodies[2:]}
    assert sent["a"] | {"seed": None} == {
        "model": "served-name",
        "prompt": "a",
        "max_tokens": 3,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 20,
        "seed": None,
    }
    assert (sent["a"]["seed"], sent["b"]["seed"]) == (5, (2**40 + 6) % 2**31)  # per sample, 32-bit safe
    assert server.auth_headers == [None] * 4  # no api_key_env: no Authorization header


def test_finish_reasons_are_mapped_to_the_harness_vocabulary() -> None:
    stops = ("###",)
    # A stop string left in the text (transformers serve) cuts it, as the hf backend does.
    assert map_finish("an answer###more", {"finish_reason": "stop"}, stops) == ("an answer", "stop")
    assert map_finish("an answer###more", {"finish_reason": "length"}, stops) == ("an answer", "stop")
    assert map_finish("abc", {"finish_reason": "length"}, stops) == ("abc", "length")
    # vLLM names what stopped it: the string, or null for EOS.
    assert map_finish("abc", {"finish_reason": "stop", "stop_reason": "###"}, stops) == ("abc", "stop")
    assert map_finish("abc", {"finish_reason": "stop", "stop_reason": None}, stops) == ("abc", "eos")
    # TGI's own words.
    assert map_finish("abc", {"finish_reason": "eos_token"}, stops) == ("abc", "eos")
    assert map_finish("abc", {"finish_reason": "stop_sequence"}, stops) == ("abc", "stop")
    # No stop strings asked for: "stop" can only be EOS. With some, nothing tells: the server's word.
    assert map_finish("abc", {"finish_reason": "stop"}, ()) == ("abc", "eos")
    assert map_finish("abc", {"finish_reason": "stop"}, stops) == ("abc", "stop")
    assert map_finish("abc", {"finish_reason": "content_filter"}, ()) == ("abc", "stop")
    with pytest.raises(OpenAIServerError, match="finish_reason None"):
        map_finish("abc", {"finish_reason": None}, ())


def test_chat_endpoint_sends_the_messages_the_cache_keys_on(server, plugins) -> None:
    backend = make(server, plugins, endpoint="chat")
    s = sample(instruction="Repeat.", input="the cat")
    chat = backend.format_prompt(s, PromptConfig(format="chat", system="Be brief."))
    expected = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Repeat.\n\nthe cat"}]
    assert json.loads(chat) == expected and parse_messages(chat) == expected
    plain = backend.format_prompt(s, PromptConfig())  # the instruction template, as one user message
    assert parse_messages(plain) == [
        {"role": "user", "content": "### Instruction:\nRepeat.\n\n### Input:\nthe cat\n\n### Response:\n"}
    ]
    out = backend.generate([chat, plain, "free text"], GenerationConfig(max_new_tokens=4))
    sent = sorted(json.dumps(body["messages"]) for body in server.bodies)  # concurrent: any order
    assert sent == sorted(
        json.dumps(m) for m in (expected, parse_messages(plain), [{"role": "user", "content": "free text"}])
    )
    assert all(body["max_tokens"] == 4 and "prompt" not in body for body in server.bodies)
    assert out[0].text == "re: Repeat.\n\nthe cat" and out[2].text == "re: free text"
    assert parse_messages("[not json") == [{"role": "user", "content": "[not json"}]
    assert messages_json(expected) == chat


def test_chat_prompts_on_the_completions_endpoint_are_refused(server, plugins) -> None:
    backend = make(server, plugins)
    with pytest.raises(ConfigError, match="endpoint=chat"):
        backend.format_prompt(sample(), PromptConfig(format="chat"))
    assert backend.chat_template() is None


def test_token_counts_come_from_a_local_tokenizer_when_the_server_reports_none(
    server, plugins, tiny_model_dir
) -> None:
    def no_usage(body: dict[str, Any]) -> dict[str, Any]:
        answer = default_answer(body)
        del answer["usage"]
        return answer

    server.answer = no_usage
    with pytest.raises(OpenAIServerError, match="reports no token usage; pass -o tokenizer=DIR"):
        make(server, plugins).generate(["hello there"], GenerationConfig())
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    (got,) = make(server, plugins, tokenizer=str(tiny_model_dir)).generate(
        ["hello there"], GenerationConfig()
    )
    assert got.prompt_tokens == len(tok("hello there", add_special_tokens=False)["input_ids"]) > 0
    assert got.completion_tokens == len(tok("re: hello there", add_special_tokens=False)["input_ids"])
    # With the chat endpoint the prompt is counted as the local chat template renders it.
    chat = make(server, plugins, endpoint="chat", tokenizer=str(tiny_model_dir))
    messages = [{"role": "user", "content": "hello there"}]
    (got,) = chat.generate([messages_json(messages)], GenerationConfig())
    templated = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert got.prompt_tokens == len(tok(templated, add_special_tokens=False)["input_ids"]) > 5


# ---------------------------------------------------------------------------
# The cache key of a remote model
# ---------------------------------------------------------------------------


def test_the_checkpoint_hash_follows_the_models_listing_not_its_clock(server, plugins) -> None:
    def listing(created: int, root: str) -> tuple[int, dict[str, Any]]:
        entry = {"id": "m", "object": "model", "created": created, "owned_by": "vllm", "root": root}
        return 200, {"object": "list", "data": [entry, {"id": "other", "root": "x"}]}

    server.models = listing(1000, "/weights/v1")
    first = make(server, plugins, path="m")
    assert first.describe()["server_model"] == {"id": "m", "owned_by": "vllm", "root": "/weights/v1"}
    server.models = listing(2000, "/weights/v1")  # vLLM stamps `created` with the request's time
    assert make(server, plugins, path="m").checkpoint_hash == first.checkpoint_hash
    server.models = listing(2000, "/weights/v2")  # other weights behind the same name
    assert make(server, plugins, path="m").checkpoint_hash != first.checkpoint_hash
    assert make(server, plugins, path="other").checkpoint_hash != first.checkpoint_hash
    assert server.model_lookups == 4

    server.models = (200, {"object": "list", "data": []})  # not listed: the name alone
    unlisted = make(server, plugins, path="m")
    assert unlisted.server_model() is None and len(unlisted.checkpoint_hash) == 64
    server.models = (404, {"detail": "Not Found"})  # no listing at all: the name alone too
    assert make(server, plugins, path="m").checkpoint_hash == unlisted.checkpoint_hash


def test_a_pinned_revision_makes_the_hash_without_asking_the_server(server, plugins) -> None:
    pinned = make(server, plugins, path="m", revision="2024-06-01")
    assert pinned.opts.revision == "2024-06-01"
    assert make(server, plugins, path="m", revision="2024-06-02").checkpoint_hash != pinned.checkpoint_hash
    assert server.model_lookups == 0
    # A YAML date from `-o revision=2024-06-01` is read as the same text.
    import datetime

    from_cli = make(server, plugins, path="m", revision=datetime.date(2024, 6, 1))
    assert from_cli.checkpoint_hash == pinned.checkpoint_hash


def test_a_failing_model_listing_is_an_error_that_suggests_pinning(server, plugins) -> None:
    server.models = (500, {"error": "Cache directory not found"})
    with pytest.raises(OpenAIServerError, match=r"HTTP 500: Cache directory not found.*-o revision=NAME"):
        make(server, plugins, path="m", max_retries=1).checkpoint_hash  # noqa: B018


def test_options_are_checked(server, plugins, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(ConfigError, match=f"environment variable {KEY_ENV} .* is not set"):
        make(server, plugins, api_key_env=KEY_ENV)
    with pytest.raises(ConfigError, match="option 'base_url'.*http://"):
        make(server, plugins, base_url="127.0.0.1:8000/v1")
    with pytest.raises(ConfigError, match="option 'api_key'"):
        make(server, plugins, api_key=SECRET)  # the key itself is never an option
    with pytest.raises(ConfigError, match="cannot load an adapter.*--lora-modules"):
        load_backend(
            ModelSpec("m", adapter="a", backend="openai", options={"base_url": server.base_url}),
            plugins.registry,
        )
    assert make(server, plugins, base_url=server.base_url + "/").base_url == server.base_url


# ---------------------------------------------------------------------------
# Scoring continuations
# ---------------------------------------------------------------------------


def echo_logprobs(body: dict[str, Any]) -> dict[str, Any]:
    """vLLM's answer to echo=True, logprobs=1: a token per word (with the space or newline
    before it), log p = -(its length), none for the first; then one generated token."""
    prompt = body["prompt"]
    assert body["echo"] is True and body["logprobs"] == 1 and body["max_tokens"] == 1
    tokens, offsets, start = [], [], 0
    for i, char in enumerate(prompt + " X"):
        if i > start and char in " \n":
            tokens.append((prompt + " X")[start:i])
            offsets.append(start)
            start = i
    tokens.append(" X")
    offsets.append(len(prompt))
    values = [None] + [-float(len(t)) for t in tokens[1:]]
    choice = {
        "text": prompt + " X",
        "index": 0,
        "finish_reason": "length",
        "logprobs": {
            "tokens": tokens,
            "token_logprobs": values,
            "text_offset": offsets,
            "top_logprobs": None,
        },
    }
    return {"choices": [choice], "usage": {"prompt_tokens": len(tokens) - 1, "completion_tokens": 1}}


def test_loglikelihood_sums_the_continuations_prompt_logprobs(server, plugins) -> None:
    server.answer = echo_logprobs
    backend = make(server, plugins)
    got = backend.loglikelihood(
        ["the cat", "the cat ", "", "the cat"], [" sat down", "sat", "hello world", ""]
    )
    # " sat" + " down" = 4 + 5; "sat" rides on the token " sat" that starts in the context: 4;
    # an empty context leaves the first token unscored: " world" = 6; nothing to score: 0.
    assert got == [(9.0, 2), (4.0, 1), (6.0, 1), (0.0, 0)]


def test_a_server_that_cannot_score_says_so(server, plugins) -> None:
    backend = make(server, plugins)  # default_answer: no logprobs, no echo
    with pytest.raises(OpenAIServerError, match="cannot score continuations.*perplexity is unavailable"):
        backend.loglikelihood(["ctx"], [" cont"])
    server.script = lambda key, attempt: "400"
    with pytest.raises(OpenAIServerError, match="HTTP 400.*cannot score continuations"):
        backend.loglikelihood(["ctx"], [" cont"])
    with pytest.raises(OpenAIServerError, match="through the chat endpoint"):
        make(server, plugins, endpoint="chat").loglikelihood(["ctx"], [" cont"])


# ---------------------------------------------------------------------------
# Through evaluate: the store, the cache and the report
# ---------------------------------------------------------------------------


def _store_text(path: Path) -> str:
    """Every value of every table, as text (DuckDB may compress strings on disk)."""
    with Store.reader(path) as store:
        tables = [
            row["table_name"] for row in store.query("SELECT table_name FROM information_schema.tables")
        ]
        return "\n".join(json.dumps(store.query(f'SELECT * FROM "{t}"'), default=str) for t in tables)


def test_runs_are_cached_and_the_api_key_is_never_stored_or_shown(
    server, plugins, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)
    server.answer = lambda body: (
        default_answer(body)
        | {"choices": [{"text": echo_input(body["prompt"]), "index": 0, "finish_reason": "stop"}]}
    )
    server.script = lambda key, attempt: "500" if attempt == 1 and "barked" in key else "ok"
    suite = load_suite(DATA / "echo_suite")
    spec = ModelSpec(
        "served",
        backend="openai",
        options={"base_url": server.base_url, "api_key_env": KEY_ENV, "backoff_s": 0.001},
    )
    path = tmp_path / "store.duckdb"
    with Store.writer(path) as store:
        summary = evaluate(suite, spec, store, plugins)
        assert summary.status == "completed" and (summary.generated, summary.cached) == (8, 0)
        assert summary.corpus["exact_match"]["value"] == pytest.approx(4 / 8)  # the server echoed the inputs
        requests = sum(server.attempts.values())
        again = evaluate(suite, spec, store, plugins)
        assert (again.generated, again.cached) == (0, 8) and sum(server.attempts.values()) == requests
        document = build_report(store, "run", plugins=plugins, run=summary.run_id)
        reports = {fmt: render(document, fmt) for fmt in FORMATS}
        # A failed run stores its error: the server quoted the key back, the harness did not.
        server.script = lambda key, attempt: "400"
        with pytest.raises(OpenAIServerError):
            evaluate(suite, ModelSpec("other", backend="openai", options=spec.options), store, plugins)
        errors = [row["error"] for row in store.query("SELECT error FROM runs WHERE status = 'failed'")]
    assert len(errors) == 1 and "Bearer ***" in errors[0]
    assert all(header == f"Bearer {SECRET}" for header in server.auth_headers)
    for fmt, text in reports.items():
        plain = text.replace("\\", "")  # markdown escapes underscores
        assert KEY_ENV in plain, fmt  # the options are shown ...
        assert SECRET not in text and SECRET not in plain, fmt  # ... the key is not
    stored = _store_text(path)
    assert KEY_ENV in stored and SECRET not in stored
    for file in (f for f in tmp_path.iterdir() if f.is_file()):
        assert SECRET.encode() not in file.read_bytes(), file.name


def test_a_perplexity_suite_scores_through_echo(server, plugins, harness_store) -> None:
    server.answer = lambda body: echo_logprobs(body) if body.get("echo") else default_answer(body)
    suite = load_suite(DATA / "openai" / "perplexity_suite")
    spec = ModelSpec("served", backend="openai", options={"base_url": server.base_url})
    summary = evaluate(suite, spec, harness_store, plugins)
    assert summary.status == "completed"
    nll = harness_store.query("SELECT nll, tokens FROM loglikelihoods ORDER BY nll")
    # "\nthe" + " cat" + " sat" and "\na" + " dog" + " barked": the newline ends the context.
    assert [(row["nll"], row["tokens"]) for row in nll] == [(12.0, 3), (13.0, 3)]


def test_a_failed_request_stops_the_others(server, plugins) -> None:
    server.script = lambda key, attempt: "400" if key == "p0" else "ok"
    server.ok_delay_s = 0.05
    backend = make(server, plugins, max_concurrency=2)
    with pytest.raises(OpenAIServerError):
        backend.generate([f"p{i}" for i in range(40)], GenerationConfig())
    time.sleep(0.1)
    assert sum(server.attempts.values()) < 10  # not all 40 went out after the failure


def test_generate_works_inside_a_running_event_loop(server, plugins) -> None:
    import asyncio

    backend = make(server, plugins)

    async def notebook_cell() -> list[str]:
        return [c.text for c in backend.generate(["x"], GenerationConfig())]

    assert asyncio.run(notebook_cell()) == ["re: x"]


# ---------------------------------------------------------------------------
# A real server: `transformers serve` on the tiny model, on CPU, offline
# ---------------------------------------------------------------------------

_SERVE_NEEDS = ("fastapi", "uvicorn", "openai")  # transformers' `serving` extra
_MISSING = [name for name in _SERVE_NEEDS if importlib.util.find_spec(name) is None]
needs_serving = pytest.mark.skipif(
    bool(_MISSING),
    reason=f"transformers serve needs {', '.join(_MISSING)}: pip install 'transformers[serving]'",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """`transformers serve <model dir>` on a free loopback port, offline, in its own process group."""

    def __init__(self, model_dir: Path, work: Path):
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = work / "serve.log"
        (work / "hub").mkdir()
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_HUB_CACHE": str(work / "hub"),  # its /v1/models scans this and fails when it is missing
            "NO_PROXY": "127.0.0.1,localhost",
        }
        command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(model_dir)]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu"]
        with self.log_path.open("w") as log_file:
            self.process = subprocess.Popen(
                command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_until_healthy(self, deadline_s: float = 180.0) -> str:
        deadline = time.monotonic() + deadline_s
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"transformers serve exited ({self.process.returncode}):\n{self._log_tail()}")
            try:
                if httpx2.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return self.base_url
            except httpx2.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"transformers serve not healthy after {deadline_s:.0f} s:\n{self._log_tail()}")
            time.sleep(0.25)

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)
        except ProcessLookupError:
            pass

    def _log_tail(self) -> str:
        return self.log_path.read_text()[-3000:]


@pytest.fixture(scope="module", autouse=True)
def _serve_process(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProcess | None]:
    """Started with the module, when a selected test needs it, so that its start-up (mostly
    imports, 10-20 s here) overlaps the fault-server tests instead of adding to them."""
    wanted = not _MISSING and any(
        "transformers_server" in item.fixturenames
        for item in request.session.items
        if getattr(item, "module", None) is request.module
    )
    if not wanted:
        yield None
        return
    process = ServeProcess(request.getfixturevalue("tiny_model_dir"), tmp_path_factory.mktemp("serve"))
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def transformers_server(_serve_process: ServeProcess | None) -> str:
    """The base URL of `transformers serve` on the tiny model, once it answers /health."""
    assert _serve_process is not None, "started by _serve_process for every test that asks for it"
    return _serve_process.wait_until_healthy()


@needs_serving
@pytest.mark.slow
def test_evaluate_against_transformers_serve(
    transformers_server, tiny_model_dir, plugins, harness_store
) -> None:
    suite = load_suite(DATA / "echo_suite")  # 8 samples, max_new_tokens 16, greedy
    spec = ModelSpec(
        str(tiny_model_dir), backend="openai", options={"base_url": transformers_server, "max_concurrency": 2}
    )
    summary = evaluate(suite, spec, harness_store, plugins)
    assert summary.status == "completed" and (summary.generated, summary.cached) == (8, 0)
    rows = harness_store.query(
        "SELECT g.text, g.prompt_tokens, g.completion_tokens, g.finish_reason, g.latency_s FROM run_generations "
        "JOIN generations g USING (cache_key) WHERE run_id = ?",
        [summary.run_id],
    )
    for row in rows:
        assert 10 < row["prompt_tokens"] < 100  # the instruction template around a few words
        assert 1 <= row["completion_tokens"] <= 16
        assert row["finish_reason"] in ("length", "eos") and row["latency_s"] > 0
        assert row["finish_reason"] == "eos" or row["completion_tokens"] == 16
    # Random weights: greedy output runs to the limit (as with the hf backend) and is not empty.
    assert any(row["finish_reason"] == "length" and row["text"] for row in rows)
    again = evaluate(suite, spec, harness_store, plugins)
    assert (again.generated, again.cached) == (0, 8)


@needs_serving
@pytest.mark.slow
def test_chat_and_scoring_against_transformers_serve(
    transformers_server, tiny_model_dir, plugins, harness_store
) -> None:
    options = {"base_url": transformers_server, "endpoint": "chat", "max_concurrency": 2}
    spec = ModelSpec(str(tiny_model_dir), backend="openai", options=options)
    summary = evaluate(load_suite(DATA / "openai" / "chat_suite"), spec, harness_store, plugins)
    assert summary.status == "completed" and summary.generated == 3
    prompts = harness_store.query("SELECT prompt FROM samples WHERE run_id = ?", [summary.run_id])
    assert all(parse_messages(row["prompt"])[0]["role"] == "system" for row in prompts)
    rows = harness_store.query("SELECT prompt_tokens, completion_tokens, finish_reason FROM generations")
    # The server applied the chat template (system + user turns and the assistant header).
    assert all(row["prompt_tokens"] > 15 and 1 <= row["completion_tokens"] <= 8 for row in rows)
    completions = dict(options, endpoint="completions")
    backend = load_backend(
        ModelSpec(str(tiny_model_dir), backend="openai", options=completions), plugins.registry
    )
    with pytest.raises(HarnessError, match="cannot score continuations.*perplexity is unavailable"):
        backend.loglikelihood(["### Response:\n"], ["the cat sat"])
    # The run report renders for a remote model and says which server answered.
    text = render(build_report(harness_store, "run", plugins=plugins, run=summary.run_id), "markdown")
    text = text.replace("\\", "")  # markdown escapes
    assert f"base_url={transformers_server}" in text and "endpoint=chat" in text
