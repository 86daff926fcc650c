"""The retry policy on its own: which errors are retried, how long it waits, when it gives up, and that
lm-eval's error logs lose their Authorization header."""

import logging
import random
import time
from email.utils import formatdate

import pytest
import requests

from evaljobs.engine.errors import EndpointError
from evaljobs.engine.retrying import RedactAuthorization, RetryPolicy, classify, retry_after

URL = "http://127.0.0.1:9/v1/completions"


def http_error(status: int, headers: dict | None = None) -> requests.HTTPError:
    response = requests.Response()
    response.status_code, response.headers = status, requests.structures.CaseInsensitiveDict(headers or {})
    return requests.HTTPError(f"{status}", response=response)


def test_retry_after_in_seconds_or_as_a_date():
    assert retry_after({"Retry-After": "3"}) == 3.0
    assert 8 < retry_after({"Retry-After": formatdate(time.time() + 10, usegmt=True)}) <= 10
    assert retry_after({"Retry-After": "soon"}) is None and retry_after({}) is None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (http_error(429), "http_429"),
        (http_error(503), "http_503"),
        (http_error(401), None),
        (http_error(400), None),
        (requests.ConnectionError("reset"), "connection"),
        (requests.Timeout("slow"), "timeout"),
        (TimeoutError(), "timeout"),
        (KeyError("choices"), None),
    ],
)
def test_what_is_retried(error, reason):
    assert classify(error)[0] == reason


def test_retry_after_is_waited_and_backoff_is_jittered_within_bounds():
    policy = RetryPolicy(URL, rng=random.Random(1))
    now = time.monotonic()
    assert policy.wait(1, now, http_error(429, {"Retry-After": "5"})) == 5.0
    waits = [policy.wait(3, now, http_error(500)) for _ in range(20)]  # backoff 2 s: waits in [1, 2]
    assert all(1.0 <= w <= 2.0 for w in waits) and len(set(waits)) == 20
    assert policy.counts() == {"total": 21, "gave_up": 0, "http_429": 1, "http_500": 20}


def test_gives_up_after_max_retries_naming_endpoint_and_last_error():
    policy = RetryPolicy(URL, max_retries=2)
    attempts = []

    def send():
        attempts.append(time.monotonic())
        raise http_error(503)

    policy.base = 0.01
    with pytest.raises(EndpointError) as info:
        policy.call(send)
    assert len(attempts) == 3
    assert str(info.value).startswith(f"requests to {URL} keep failing: gave up after 3 attempts")
    assert "last error: HTTP 503" in str(info.value) and "settings.max_retries=2" in str(info.value)
    assert policy.counts() == {"total": 2, "gave_up": 1, "http_503": 2}


def test_gives_up_at_the_deadline_rather_than_wait_past_it():
    policy = RetryPolicy(URL, max_retries=50, deadline=2.0)
    started = time.monotonic()
    with pytest.raises(EndpointError, match="settings.retry_deadline=2 s"):
        policy.call(lambda: (_ for _ in ()).throw(http_error(429, {"Retry-After": "1"})))
    assert time.monotonic() - started < 2.5


def test_errors_a_retry_cannot_fix_are_raised_at_once():
    calls = []
    with pytest.raises(requests.HTTPError):
        RetryPolicy(URL).call(lambda: calls.append(1) or (_ for _ in ()).throw(http_error(401)))
    assert calls == [1]


async def _ok():
    return "answer"


def test_async_calls_return_the_answer():
    import asyncio

    assert asyncio.run(RetryPolicy(URL).acall(_ok)) == "answer"


def test_authorization_headers_are_redacted_from_lm_eval_logs():
    record = logging.LogRecord(
        "lm_eval.models.api_models",
        logging.ERROR,
        __file__,
        1,
        "Exception:%s",
        ("RequestInfo(headers=<CIMultiDictProxy('Authorization': 'Bearer canary-123', 'Accept': '*/*')>",),
        None,
    )
    assert RedactAuthorization().filter(record)
    assert "canary-123" not in record.getMessage() and "'Authorization': '[redacted]'" in record.getMessage()


def test_no_retry_once_our_server_is_gone():
    policy = RetryPolicy(URL, alive=lambda: False)
    with pytest.raises(EndpointError, match=f"the server behind {URL} is gone; last error: ConnectionError: refused"):
        policy.call(lambda: (_ for _ in ()).throw(requests.ConnectionError("refused")))
    assert policy.counts() == {"total": 0, "gave_up": 1}
