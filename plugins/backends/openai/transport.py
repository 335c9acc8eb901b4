"""HTTP for the `openai` backend: requests sent concurrently (at most `max_concurrency` in
flight), answers in request order, and the retry policy (HTTP 429/500/502/503/504, a
dropped connection or a timeout are retried with exponential backoff and jitter, at
least what `Retry-After` asks; any other 4xx stops at once with the server's message).
The API key is read from the environment variable `api_key_env` names and scrubbed
from everything the server says back."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from harness import ConfigError, Progress
from harness.plugins.backends.openai.options import OpenAIOptions
from harness.plugins.backends.openai.protocol import OpenAIServerError, server_message

if TYPE_CHECKING:
    import httpx2

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
"""Statuses a later attempt can cure: rate limits and a server that is busy, restarting or behind a failing proxy."""

T = TypeVar("T")


class _Retryable(Exception):
    """One attempt failed in a way a later attempt may not."""

    def __init__(self, problem: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(problem)
        self.problem = problem
        self.status = status
        self.retry_after = retry_after


class Transport:
    """HTTP to the server for one backend: requests sent concurrently with the retry
    policy, counted in the backend's `stats`, and the API key kept out of every message."""

    def __init__(self, opts: OpenAIOptions, model_name: str, stats: dict[str, float]) -> None:
        self.opts = opts
        self.base_url = opts.base_url
        self.model_name = model_name
        self.stats = stats
        self._api_key = read_api_key(opts.api_key_env)
        self._rng = random.Random()

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run a coroutine to completion from synchronous code, even inside a running
        event loop (a notebook), where it gets a thread of its own."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(_as_coroutine(make))
        with ThreadPoolExecutor(1, thread_name_prefix="harness-openai") as pool:
            return pool.submit(asyncio.run, _as_coroutine(make)).result()

    def client(self) -> httpx2.AsyncClient:
        import httpx2  # imported on first use: loading the plugin costs nothing

        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limit = self.opts.max_concurrency
        return httpx2.AsyncClient(
            base_url=self.base_url + "/",
            headers=headers,
            timeout=httpx2.Timeout(self.opts.timeout_s),
            limits=httpx2.Limits(max_connections=limit, max_keepalive_connections=limit),
        )

    async def post_all(
        self, path: str, bodies: Sequence[dict[str, Any]], progress: Progress | None
    ) -> list[tuple[Any, float]]:
        """POST every body, at most `max_concurrency` at a time; answers in input order."""
        semaphore = asyncio.Semaphore(self.opts.max_concurrency)
        async with self.client() as client:

            async def one(body: dict[str, Any]) -> tuple[Any, float]:
                # The slot is held through backoff: a rate-limited client should not send more.
                async with semaphore:
                    answer = await self.request(client, "POST", path, body)
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

    async def request(
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
            raise _Retryable(f"{type(exc).__name__}: {self.scrub(str(exc)) or 'no detail'}") from None
        except httpx2.RequestError as exc:  # a proxy refusing, a bad redirect: retrying will not help
            raise OpenAIServerError(
                f"{method} {url}: {type(exc).__name__}: {self.scrub(str(exc))}", attempts=n
            ) from None
        status = response.status_code
        if status in RETRY_STATUSES:
            raise _Retryable(
                f"HTTP {status}: {self.scrub(server_message(response))}",
                status,
                parse_retry_after(response.headers),
            )
        if not 200 <= status < 300:
            raise OpenAIServerError(
                f"the server at {self.base_url} answered HTTP {status} to {method} /{path}"
                f" (model {self.model_name!r}): {self.scrub(server_message(response))}",
                status=status,
                attempts=n,
            )
        try:
            return response.json()
        except ValueError:
            raise OpenAIServerError(
                f"the server at {self.base_url} answered {method} /{path} with something that is not "
                f"JSON: {self.scrub(response.text[:200])!r}",
                status=status,
                attempts=n,
            ) from None

    def scrub(self, text: str) -> str:
        """Servers sometimes quote the credentials they were sent; the key never leaves here."""
        return text.replace(self._api_key, "***") if self._api_key else text


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


def read_api_key(variable: str | None) -> str | None:
    """The key in the environment variable `variable` names (None when none is named); a
    named variable that is unset or empty is a mistake, said in one line."""
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
