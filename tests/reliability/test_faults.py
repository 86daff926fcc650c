"""A faulty endpoint (the seeded proxy of tests/faults.py in front of the real vLLM server): with 20 % of
requests failing the job gives exactly the clean run's per-example outputs, honours Retry-After and reports
its retries; an endpoint that goes down fails the job in bounded time, naming it, and keeps what was answered.
"""

import json
import time
from pathlib import Path

import pytest

from evaljobs.engine.errors import HarnessError
from evaljobs.engine.job import run_job
from evaljobs.engine.spec import JobSpec
from tests.faults import FaultProxy

pytestmark = pytest.mark.vllm
LIMIT = 8
BENCHMARKS = ["arc_challenge_local", "gsm8k_local"]
SETTINGS = {"limit": LIMIT, "max_tokens": 24, "concurrency": 4, "request_timeout": 8, "max_retries": 8}


def job(model_dir: Path, endpoint: str, home: Path, benchmarks=BENCHMARKS, **settings) -> JobSpec:
    return JobSpec.parse(
        {
            "model": {"checkpoint": str(model_dir), "model": "smollm2", "endpoint": endpoint},
            "benchmarks": benchmarks,
            "settings": SETTINGS | settings,
            "destination": {"results_home": str(home), "wandb": "disabled", "publish_leaderboard": False},
        }
    )


def bundle(row) -> tuple[list[dict], dict]:
    folder = Path(row.bundle)
    samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]
    return samples, json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def runs(vllm_server, api_key, model_dir, tmp_path_factory):
    upstream = vllm_server.base_url.removesuffix("/v1")
    with FaultProxy(upstream, api_key, rate=0.0) as clean_proxy:
        clean = run_job(job(model_dir, clean_proxy.url, tmp_path_factory.mktemp("clean")))
    with FaultProxy(upstream, api_key, rate=0.2, seed=7, stall=10) as proxy:
        started = time.monotonic()
        faulty = run_job(job(model_dir, proxy.url, tmp_path_factory.mktemp("faulty")))
        faulty.seconds = time.monotonic() - started
    return clean, faulty, proxy


def test_twenty_percent_faults_give_the_clean_runs_outputs(runs):
    clean, faulty, proxy = runs
    assert set(proxy.injected()) == {"429_retry_after", "429", "500", "drop", "stall"}
    for a, b in zip(clean.rows, faulty.rows, strict=True):
        assert (a.benchmark, a.score, a.metrics) == (b.benchmark, b.score, b.metrics)
        assert bundle(a)[0] == bundle(b)[0]  # every example: input, output, log-likelihoods, score
        assert len(bundle(b)[0]) == LIMIT


def test_retries_are_counted_in_the_bundles(runs):
    clean, faulty, proxy = runs
    assert all(bundle(r)[1]["timing"]["retries"] == 0 for r in clean.rows)
    reasons = {}
    groups = {tuple(bundle(r)[1]["timing"]["evaluated_with"]): bundle(r)[1]["timing"] for r in faulty.rows}
    for timing in groups.values():  # benchmarks evaluated together share one count
        for reason, n in timing["retries_by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    injected = proxy.injected()
    seconds = [max(bundle(r)[1]["timing"]["seconds"] for r in run.rows) for run in (clean, faulty)]
    print(f"injected {dict(injected)} in {len(proxy.events)} attempts; retried {reasons}; evaluation s {seconds}")
    assert reasons["http_429"] == injected["429_retry_after"] + injected["429"]
    assert reasons["http_500"] == injected["500"]
    assert reasons.get("connection", 0) + reasons.get("timeout", 0) >= injected["drop"] + injected["stall"]
    assert reasons["gave_up"] == 0
    assert sum(timing["retries"] for timing in groups.values()) == sum(n for k, n in reasons.items() if k != "gave_up")


def test_retry_after_is_honoured_and_backoff_is_jittered(runs):
    proxy = runs[2]
    following = {}
    for event in proxy.events:
        following.setdefault(event.body, []).append(event)
    waits = {"429_retry_after": [], "429": []}
    for attempts in following.values():
        for failed, retried in zip(attempts, attempts[1:], strict=False):
            if failed.fault in waits:
                waits[failed.fault].append(retried.at - failed.at)
    assert waits["429_retry_after"] and min(waits["429_retry_after"]) >= proxy.retry_after
    assert waits["429"] and min(waits["429"]) >= 0.25  # half the first backoff (0.5 s) at least
    assert len({round(w, 2) for w in waits["429"]}) > 1 or len(waits["429"]) == 1  # jitter


def test_an_endpoint_that_goes_down_fails_in_bounded_time_and_keeps_the_answers(
    vllm_server, api_key, model_dir, tmp_path
):
    upstream = vllm_server.base_url.removesuffix("/v1")
    spec = dict(benchmarks=["arc_challenge_local"], max_retries=3, retry_deadline=10, request_timeout=4)
    with FaultProxy(upstream, api_key, rate=0.0, fail_after=10, stall=6) as proxy:
        with pytest.raises(HarnessError) as info:
            run_job(job(model_dir, proxy.url, tmp_path, **spec))
        failed_at = time.monotonic()
    first_fault = min(e.at for e in proxy.events if e.fault)
    message = str(info.value)
    assert f"requests to {proxy.url}/v1/completions keep failing: gave up after" in message, message
    assert "last error: " in message and api_key not in message
    print(f"failed {failed_at - first_fault:.1f} s after the first fault:\n{message}")
    assert failed_at - first_fault < 40  # retry_deadline 10 s + one attempt + lm-eval's wind-down
    answered = sum(1 for e in proxy.events if e.fault is None)
    assert answered == 10 and len(proxy.events) > answered
    with FaultProxy(upstream, api_key, rate=0.0) as clean:
        [row] = run_job(job(model_dir, clean.url, tmp_path, **spec)).rows
    resent = sum(1 for e in clean.events if e.fault is None) - (LIMIT * 4 - answered)
    print(f"re-run repeated {resent} requests")
    assert 0 <= resent <= SETTINGS["concurrency"]  # only those in flight when it failed are sent again
    assert row.n_samples == LIMIT
