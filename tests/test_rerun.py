"""A finished job's re-run answered by the request cache alone starts no server, and the check is exact: one
request missing from the cache and the server is needed, which then gets exactly that request. Against the
latency-bound endpoint (deterministic answers, request counts); the quickstart DAG test does the same with
real vLLM through the serve task."""

from __future__ import annotations

import logging
import re
import sqlite3
from pathlib import Path

from evaljobs.engine.job import answered_by_cache, run_job
from evaljobs.engine.spec import JobSpec
from tests.latency_endpoint import MODEL, LatencyEndpoint

BENCHMARKS = ["arc_challenge_local", "gsm8k_local"]


def spec(model_dir, home, job_id: str, endpoint: str | None = None) -> JobSpec:
    model = {"checkpoint": str(model_dir)} | ({"endpoint": endpoint, "model": MODEL} if endpoint else {})
    return JobSpec.parse(
        {
            "model": model,
            "benchmarks": BENCHMARKS,
            "settings": {"limit": 4, "max_tokens": 16},
            "destination": {"project": "rerun", "results_home": str(home), "wandb": "disabled"},
            "job_id": job_id,
        }
    )


def test_a_cached_rerun_starts_no_server_and_one_missing_request_needs_it(model_dir, tmp_path, caplog):
    home = tmp_path / "home"
    with LatencyEndpoint(0.01, 16) as endpoint:
        lines: list[str] = []
        first = run_job(spec(model_dir, home, "first", endpoint.base_url), log=lines.append)
        sent = endpoint.stats()["requests"]
        # not even lm-eval's warning that the job's max_tokens overrides the tasks' own (it does so on purpose)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        progress = [re.match(r"\s+progress (\S+): (\d+)/(\d+) requests", line) for line in lines]
        final = {m[1]: (int(m[2]), int(m[3])) for m in progress if m}
        assert set(final) == set(BENCHMARKS) and all(done == total for done, total in final.values())
        assert sum(total for _, total in final.values()) == sent > 0

        # The same checkpoint, the job serving it itself: the cache answers every request, nothing is sent.
        lines = []
        again = run_job(spec(model_dir, home, "again"), log=lines.append)
        assert "every request is in the request cache: no server started" in lines
        assert not any(line.startswith("starting vLLM") for line in lines)
        assert not (home / "jobs" / "again" / "vllm.log").exists() and endpoint.stats()["requests"] == sent
        assert {r.benchmark: r.score for r in again.rows} == {r.benchmark: r.score for r in first.rows}
        assert [samples(r) for r in again.rows] == [samples(r) for r in first.rows]
        assert answered_by_cache(spec(model_dir, home, "check"), log=lines.append)

        [cache] = (home / "cache").glob("*/requests_rank0.db")
        with sqlite3.connect(cache) as db:
            db.execute("DELETE FROM unnamed WHERE key = (SELECT min(key) FROM unnamed)")
        lines = []
        assert not answered_by_cache(spec(model_dir, home, "check"), log=lines.append)
        assert any(re.search(r"1 \w+ requests \(at least\) are not in the request cache", line) for line in lines)
        once_more = run_job(spec(model_dir, home, "once-more", endpoint.base_url), log=lines.append)
        assert endpoint.stats()["requests"] == sent + 1
        assert {r.benchmark: r.score for r in once_more.rows} == {r.benchmark: r.score for r in first.rows}


def samples(row) -> str:
    return (Path(row.bundle) / "samples.jsonl").read_text()
