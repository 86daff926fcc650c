"""A lost pod resumes (issue 16): ``evaljobs run`` with an object-store results home (a real S3 server,
SeaweedFS) copies its request cache there as answers arrive; a job SIGKILLed mid-benchmark and run again with
a fresh local disk (a new pod: fresh emptyDir, same bucket) sends exactly the requests the store does not hold,
and scores what an uninterrupted run scores. Against the latency-bound endpoint, which counts requests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from evaljobs.engine.cachecopy import parse_segment
from evaljobs.engine.job import answered_by_cache
from evaljobs.engine.spec import JobSpec
from tests.latency_endpoint import MODEL, LatencyEndpoint

BENCHMARKS = ["arc_challenge_local", "gsm8k_local"]
LIMIT = 30  # 30 generations + 30 x 4 log-likelihoods: 150 requests
CONCURRENCY = 4
EVERY = 10  # cache_copy_answers; cache_copy_seconds is an hour, so only the count triggers a copy


def job(
    tmp: Path, endpoint: LatencyEndpoint, model_dir: Path, env: dict[str, str], bucket: str, name: str
) -> subprocess.Popen:
    """``evaljobs run`` as a child process on a fresh local disk (its own $EVALJOBS_HOME), results in ``bucket``."""
    spec = {
        "model": {"checkpoint": str(model_dir), "endpoint": endpoint.base_url, "model": MODEL},
        "benchmarks": BENCHMARKS,
        "settings": {
            "limit": LIMIT,
            "max_tokens": 16,
            "concurrency": CONCURRENCY,
            "cache_copy_answers": EVERY,
            "cache_copy_seconds": 3600,
        },
        "destination": {"project": "resume", "results_home": f"s3://{bucket}/home", "wandb": "disabled"},
        "job_id": "resume-job",  # a retried pod runs the same job
    }
    disk = tmp / name
    disk.mkdir()
    (disk / "spec.yaml").write_text(yaml.safe_dump(spec))
    command = [sys.executable, "-m", "evaljobs.cli", "run", "--spec", str(disk / "spec.yaml")]
    command += ["--summary-out", str(disk / "summary.json")]
    environment = os.environ | env | {"EVALJOBS_HOME": str(disk / "home"), "HF_DATASETS_CACHE": str(disk / "hf")}
    return subprocess.Popen(
        command, cwd=disk, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished(process: subprocess.Popen) -> str:
    output = process.communicate(timeout=600)[0]
    assert process.returncode == 0, output[-4000:]
    return output


def copied(s3_server, bucket: str) -> set[str]:
    """The cache keys the store's whole segments hold."""
    objects = s3_server.objects(bucket)
    segments = [parse_segment(data) for key, data in objects.items() if "/cache/" in key and key.endswith(".jsonl")]
    return {key for pairs in segments if pairs for key, _ in pairs}


def scores(disk: Path) -> dict[str, float]:
    return json.loads((disk / "summary.json").read_text())["scores"]


def run_until_copied(tmp, endpoint, model_dir, s3_server, bucket, least: int, name: str) -> subprocess.Popen:
    """A job started and left running until the store holds at least ``least`` answers of it."""
    process = job(tmp, endpoint, model_dir, s3_server.env, bucket, name)
    deadline = time.monotonic() + 300
    while len(copied(s3_server, bucket)) < least:
        assert process.poll() is None, process.stdout.read()[-4000:]
        assert time.monotonic() < deadline, "no answers were copied"
        time.sleep(0.05)
    return process


def sent_since(endpoint: LatencyEndpoint, before: int) -> int:
    """Requests the endpoint answered since ``before``, once those still in flight have been answered."""
    time.sleep(1.0)  # a killed client's requests in flight are answered (and counted) within the latency
    return endpoint.stats()["requests"] - before


def test_a_sigkilled_job_rerun_on_a_fresh_disk_sends_only_what_the_store_lacks(model_dir, s3_server, tmp_path):
    with LatencyEndpoint(0.2, 64) as endpoint:
        # The uninterrupted run: how many requests the job makes, and its scores.
        first_bucket = s3_server.bucket()
        finished(job(tmp_path, endpoint, model_dir, s3_server.env, first_bucket, "reference"))
        total = endpoint.stats()["requests"]
        assert total == LIMIT * 5 == len(copied(s3_server, first_bucket))  # a cache key a request: counts are exact

        bucket = s3_server.bucket()
        before = endpoint.stats()["requests"]
        killed = run_until_copied(tmp_path, endpoint, model_dir, s3_server, bucket, 4 * EVERY, "killed")
        killed.send_signal(signal.SIGKILL)
        assert killed.wait(30) == -signal.SIGKILL
        answered = sent_since(endpoint, before)
        held = copied(s3_server, bucket)
        assert 4 * EVERY <= len(held) < total
        # answered but not in the store: fewer than N since the last copy (+ one put's worth), and those in flight
        assert answered - len(held) <= 2 * EVERY + CONCURRENCY

        before = endpoint.stats()["requests"]
        rerun = finished(job(tmp_path, endpoint, model_dir, s3_server.env, bucket, "fresh-pod"))
        sent = sent_since(endpoint, before)
        print(f"total {total}, answered before the kill {answered}, copied {len(held)}, re-run sent {sent}")
        assert sent == total - len(held)
        assert f"request cache: {len(held)} answers restored from" in rerun
        assert scores(tmp_path / "fresh-pod") == scores(tmp_path / "reference")
        assert len(copied(s3_server, bucket)) == total  # the re-run copied what it asked for


def test_sigterm_flushes_every_answer_received(model_dir, s3_server, tmp_path):
    """SIGTERM (a pod's deletion, Airflow's on_kill): what was received is copied before the job exits, so the
    next pod repeats only the requests that were in flight."""
    with LatencyEndpoint(0.2, 64) as endpoint:
        bucket = s3_server.bucket()
        stopped = run_until_copied(tmp_path, endpoint, model_dir, s3_server, bucket, 2 * EVERY, "stopped")
        stopped.send_signal(signal.SIGTERM)
        output = stopped.communicate(timeout=60)[0]
        assert stopped.returncode == 130, output[-3000:]
        answered = sent_since(endpoint, 0)
        held = copied(s3_server, bucket)
        assert re.search(rf"request cache: {len(held)} answers copied to s3://{bucket}/home/cache/", output)
        assert 0 <= answered - len(held) <= CONCURRENCY

        rerun = finished(job(tmp_path, endpoint, model_dir, s3_server.env, bucket, "next-pod"))
        assert sent_since(endpoint, answered) == LIMIT * 5 - len(held)
        assert "answers restored from" in rerun


def test_two_concurrent_jobs_of_one_model_share_the_store_without_clashing(model_dir, s3_server, tmp_path, monkeypatch):
    """Two runs of one job at once (the worst case: a zombie pod and its retry; other jobs differ in job id
    too), copying the same answers to one bucket: neither overwrites or deletes what the other needs."""
    with LatencyEndpoint(0.05, 64) as endpoint:
        bucket = s3_server.bucket()
        first = job(tmp_path, endpoint, model_dir, s3_server.env, bucket, "first")
        second = job(tmp_path, endpoint, model_dir, s3_server.env, bucket, "second")
        finished(first), finished(second)
        assert endpoint.stats()["requests"] == 2 * LIMIT * 5  # neither had anything to restore
        assert len(copied(s3_server, bucket)) == LIMIT * 5  # the same answers, each in both jobs' segments
        segments = {k: parse_segment(v) for k, v in s3_server.objects(bucket).items() if "/cache/" in k}
        # each attempt merged its own segments at its end into one object of its own, holding every answer
        assert len(segments) == 2 and all(k.endswith(".merged.jsonl") for k in segments)
        assert [len(pairs) for pairs in segments.values()] == [LIMIT * 5] * 2

        third = finished(job(tmp_path, endpoint, model_dir, s3_server.env, bucket, "third"))
        assert sent_since(endpoint, 2 * LIMIT * 5) == 0
        assert f"request cache: {LIMIT * 5} answers restored from" in third
        assert scores(tmp_path / "third") == scores(tmp_path / "first") == scores(tmp_path / "second")

    # The serve operator's cache check on a fresh disk, for the checkpoint served by the job itself: the store
    # holds every request, so no server is needed.
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("EVALJOBS_HOME", str(tmp_path / "check"))
    served = {"model": {"checkpoint": str(model_dir)}, "benchmarks": BENCHMARKS}
    served |= {"settings": {"limit": LIMIT, "max_tokens": 16}, "job_id": "check"}
    served |= {"destination": {"project": "resume", "results_home": f"s3://{bucket}/home", "wandb": "disabled"}}
    lines: list[str] = []
    assert answered_by_cache(JobSpec.parse(served), log=lines.append), lines
