"""Asking an OpenAI-compatible chat endpoint, politely and persistently (docs/design.md §19).

`ChatClient.answer` sends one request through the ``openai`` client (its own retries off, so that every attempt is
ours to count and log) and returns the answer text. Between the requests of all threads, `RateLimiter` keeps at most
``requests_per_minute``. A request that fails in a way that may pass (HTTP 408, 409, 429, 5xx, a timeout, a
connection error, a reply without an answer text) is retried up to ``max_retries`` times, waiting
``backoff x 2^attempt`` seconds (at most ``max_backoff``, less a random part of up to half, so that threads spread
out), or what the server's ``Retry-After`` header asks when that is longer. Errors that no retry mends end the
request: `EndpointError` for those that concern every request (a wrong key, an unknown model: the run stops), and
`RequestFailed` for the others (e.g. a request the endpoint refuses as too long: that sample fails, the run goes on).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import openai

logger = logging.getLogger(__name__)

RETRY_STATUSES = (408, 409, 429)
FATAL_STATUSES = (401, 403, 404)


class RequestFailed(RuntimeError):
    """One request could not be answered; the message says why (the sample's error record)."""


class EndpointError(RuntimeError):
    """The endpoint refuses every request (authentication, permission, unknown model): the run cannot go on."""


class MalformedReply(RuntimeError):
    """A reply without an answer text (no choices, no message content)."""


@dataclass(frozen=True)
class Decoding:
    """Sampling settings sent with every request."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 2048
    seed: int | None = None

    def request_fields(self) -> dict:
        fields = {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_new_tokens}
        return fields if self.seed is None else {**fields, "seed": self.seed}


class RateLimiter:
    """At most ``per_minute`` request starts per minute over all threads (None: no limit)."""

    def __init__(self, per_minute: float | None, clock: Callable[[], float] = time.monotonic, sleep=time.sleep):
        if per_minute is not None and not per_minute > 0:
            raise ValueError(f"the rate limit must be > 0 requests per minute, got {per_minute}")
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.clock, self.sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = self.clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self.sleep(start - now)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff: float = 1.0  # seconds before the first retry
    max_backoff: float = 60.0

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt + 1``."""
        delay = min(self.max_backoff, self.backoff * 2**attempt) * (1 - 0.5 * rng.random())
        return max(delay, retry_after or 0.0)


def _retry_after(error: Exception) -> float | None:
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _status(error: Exception) -> int | None:
    return getattr(error, "status_code", None)


def _describe(error: Exception) -> str:
    status = _status(error)
    message = " ".join(str(error).split())[:300]
    return f"{type(error).__name__}{f' (HTTP {status})' if status else ''}: {message}"


def _retryable(error: Exception) -> bool:
    if isinstance(error, (openai.APITimeoutError, openai.APIConnectionError, MalformedReply)):
        return True
    if isinstance(error, (openai.APIResponseValidationError, json.JSONDecodeError)):  # a body that is not the API's
        return True
    status = _status(error)
    return status is not None and (status in RETRY_STATUSES or status >= 500)


def answer_text(completion) -> str:
    """The text of the first choice; `MalformedReply` when the reply has none."""
    choices = getattr(completion, "choices", None)
    if not choices:
        raise MalformedReply("the reply holds no choices")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if not isinstance(content, str):
        raise MalformedReply(f"the reply's first choice has no text content ({type(content).__name__})")
    return content


class ChatClient:
    """One endpoint and model, shared by the worker threads (the ``openai`` client is thread-safe)."""

    def __init__(
        self,
        model: str,
        base_url: str | None,
        api_key: str,
        decoding: Decoding,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.model, self.decoding = model, decoding
        self.retry, self.limiter, self.sleep = retry or RetryPolicy(), limiter or RateLimiter(None), sleep
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
        self.rng = random.Random()

    def answer(self, messages: list, name: str = "request") -> str:
        """The answer to ``messages``; ``name`` (the sample) goes into the log lines of retries."""
        for attempt in range(self.retry.max_retries + 1):
            self.limiter.wait()
            try:
                completion = self.client.chat.completions.create(
                    model=self.model, messages=messages, **self.decoding.request_fields()
                )
                return answer_text(completion)
            except Exception as error:  # sorted below: retried, fatal for the run, or this sample's failure
                if _status(error) in FATAL_STATUSES:
                    raise EndpointError(f"the endpoint refuses the requests: {_describe(error)}") from error
                if not _retryable(error):
                    raise RequestFailed(_describe(error)) from error
                if attempt == self.retry.max_retries:
                    raise RequestFailed(f"{_describe(error)} (after {attempt + 1} attempts)") from error
                delay = self.retry.delay(attempt, _retry_after(error), self.rng)
                logger.warning("%s: %s; retry %d in %.1f s", name, _describe(error), attempt + 1, delay)
                self.sleep(delay)
        raise AssertionError("unreachable")
