"""Retries of single requests to an OpenAI-compatible endpoint: Retry-After honoured, jittered backoff, a
deadline, counted.

lm-eval 0.4.13's API models (``TemplateAPI``) retry with tenacity: a fixed number of attempts, exponential
waits that ignore ``Retry-After``, no deadline, and the request's error logged with its ``repr``, which for
aiohttp includes the request headers, so the API key. The narrowest seam is the one-request call that
tenacity wraps: ``TemplateAPI.amodel_call`` (concurrent requests, aiohttp) and ``model_call`` (one at a time,
requests). :func:`api_model` subclasses ``local-completions`` / ``local-chat-completions`` and wraps those two
methods in a :class:`RetryPolicy`; the harness gives lm-eval's own loop a single attempt, so every retry
happens here. Waiting retries hold no concurrency slot (lm-eval takes its semaphore inside the call).
Answers are cached by lm-eval as each arrives, so when a request runs out of attempts the benchmark fails
with the answered requests kept for the re-run. A log filter removes ``Authorization`` headers from
lm-eval's messages.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from functools import cache
from typing import Any

from evaljobs.engine.errors import EndpointError

RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
AUTHORIZATION = re.compile(r"""(['"]?Authorization['"]?\s*[:=]\s*['"]?)[^'",)>]+""", re.I)
LM_EVAL_LOGGERS = ("lm_eval.models.api_models", "lm_eval.models.openai_completions")


@dataclass
class RetryPolicy:
    """When to retry one request and how long to wait: ``Retry-After`` when the server sends it, otherwise
    exponential backoff from ``base`` to ``cap`` seconds with jitter; at most ``max_retries`` retries and none
    later than ``deadline`` seconds after the request first failed, and none once ``alive`` (the server
    process we started, if any) says the server is gone."""

    endpoint: str
    max_retries: int = 8
    deadline: float = 900.0
    base: float = 0.5
    cap: float = 30.0
    alive: Callable[[], bool] | None = None
    rng: random.Random = field(default_factory=random.Random, repr=False)
    retries: Counter[str] = field(default_factory=Counter)

    def wait(self, attempt: int, first_failure: float, error: BaseException) -> float:
        """Seconds to wait before retry number ``attempt``, or :class:`EndpointError` when giving up."""
        reason, retry_after = classify(error)
        if reason is None:
            raise error
        backoff = min(self.cap, self.base * 2 ** (attempt - 1))
        delay = max(retry_after or 0.0, backoff / 2 + self.rng.uniform(0, backoff / 2))
        elapsed = time.monotonic() - first_failure
        if self.alive and not self.alive():
            self.retries["gave_up"] += 1
            raise EndpointError(f"the server behind {self.endpoint} is gone; last error: {describe(error)}") from None
        if attempt > self.max_retries or elapsed + delay > self.deadline:
            self.retries["gave_up"] += 1
            raise EndpointError(
                f"requests to {self.endpoint} keep failing: gave up after {attempt} attempts and {elapsed:.1f} s "
                f"(settings.max_retries={self.max_retries}, settings.retry_deadline={self.deadline:g} s); "
                f"last error: {describe(error)}. Check that the endpoint is up and not overloaded; answered "
                "requests are cached and a re-run resumes from them"
            ) from None
        self.retries[reason] += 1
        return delay

    async def acall(self, send: Callable[[], Awaitable[Any]]) -> Any:
        attempt, first_failure = 0, None
        while True:
            try:
                return await send()
            except Exception as error:  # noqa: BLE001 - classified by wait(), which re-raises the rest
                attempt += 1
                first_failure = first_failure or time.monotonic()
                await asyncio.sleep(self.wait(attempt, first_failure, error))

    def call(self, send: Callable[[], Any]) -> Any:
        attempt, first_failure = 0, None
        while True:
            try:
                return send()
            except Exception as error:  # noqa: BLE001 - classified by wait(), which re-raises the rest
                attempt += 1
                first_failure = first_failure or time.monotonic()
                time.sleep(self.wait(attempt, first_failure, error))

    def counts(self) -> dict[str, int]:
        """Retries by reason (``http_429``, ``timeout``, ``connection``, ...), their total and give-ups."""
        by_reason = {k: v for k, v in sorted(self.retries.items()) if k != "gave_up"}
        return {"total": sum(by_reason.values()), "gave_up": self.retries["gave_up"], **by_reason}


def classify(error: BaseException) -> tuple[str | None, float | None]:
    """(reason, Retry-After seconds) for a retryable error; reason None for one that a retry cannot fix."""
    import aiohttp
    import requests

    status, headers = _status(error)
    if status is not None:
        return (f"http_{status}" if status in RETRYABLE_STATUS else None), retry_after(headers)
    if isinstance(error, (TimeoutError, requests.Timeout, aiohttp.ServerTimeoutError)):
        return "timeout", None
    if isinstance(error, (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, requests.ConnectionError)):
        return "connection", None
    if isinstance(error, (ConnectionError, OSError)):
        return "connection", None
    return None, None


def _status(error: BaseException) -> tuple[int | None, Any]:
    import aiohttp
    import requests

    if isinstance(error, aiohttp.ClientResponseError) and not isinstance(error, aiohttp.ContentTypeError):
        return error.status, error.headers
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return error.response.status_code, error.response.headers
    return None, None


def retry_after(headers: Any) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None."""
    value = (headers or {}).get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def describe(error: BaseException) -> str:
    """The error without request headers (aiohttp's repr carries them, keys included)."""
    status, _ = _status(error)
    if status is not None:
        return f"HTTP {status} {getattr(error, 'message', '') or ''}".strip()
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class RedactAuthorization(logging.Filter):
    """Removes ``Authorization`` header values from log messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "authorization" in message.lower():
            record.msg, record.args = AUTHORIZATION.sub(r"\1[redacted]", message), ()
        return True


@cache
def redact_lm_eval_logs() -> None:
    for name in LM_EVAL_LOGGERS:
        logging.getLogger(name).addFilter(RedactAuthorization())


def api_model(api: str) -> type:
    """lm-eval's ``local-completions`` (``api="completions"``) or ``local-chat-completions`` model class, with
    each request retried by the instance's ``policy``."""
    from lm_eval.models.openai_completions import LocalChatCompletion, LocalCompletionsAPI

    redact_lm_eval_logs()
    return _retrying(LocalCompletionsAPI if api == "completions" else LocalChatCompletion)


@cache
def _retrying(base: type) -> type:
    class Retrying(base):
        policy: RetryPolicy

        def __init__(self, *args: Any, tokenizer_folder: str | None = None, **kwargs: Any):
            """``tokenizer_folder``: tokenize with :class:`~evaljobs.engine.tokenizer.FolderTokenizer` (then
            give ``tokenizer_backend="none"``, so that lm-eval loads nothing itself)."""
            super().__init__(*args, **kwargs)
            if tokenizer_folder:
                from evaljobs.engine.tokenizer import FolderTokenizer

                self.tokenizer = FolderTokenizer(tokenizer_folder, add_special_tokens=self.add_bos_token)
                self.tokenizer_backend, self.tokenized_requests = "remote", True

        async def amodel_call(self, *args: Any, **kwargs: Any) -> Any:
            return await self.policy.acall(lambda: super(Retrying, self).amodel_call(*args, **kwargs))

        def model_call(self, *args: Any, **kwargs: Any) -> Any:
            return self.policy.call(lambda: super(Retrying, self).model_call(*args, **kwargs))

    Retrying.__name__ = Retrying.__qualname__ = f"Retrying{base.__name__}"
    return Retrying
