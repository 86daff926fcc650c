"""Processes die mid-benchmark. vLLM SIGKILLed: the job fails at once with the tail of the server log. The
evaluation process SIGKILLed: the results store stays intact and its server goes with it. Either way the
next run resumes from the request cache, repeating at most the requests that were in flight."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_interrupt import serving_port_alive

pytestmark = pytest.mark.vllm
LIMIT, CONCURRENCY = 16, 4


def start(model_dir: Path, home: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "evaljobs.cli", "run", "--checkpoint", str(model_dir)]
    command += ["--benchmarks", "gsm8k_local", "--limit", str(LIMIT), "--max-tokens", "64"]
    command += ["--concurrency", str(CONCURRENCY), "--results-home", str(home), "--project", "kills"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def until_evaluating(job: subprocess.Popen) -> int:
    """Read the job's output until its benchmark starts; the vLLM port."""
    port, deadline = None, time.monotonic() + 600
    for line in job.stdout:
        if match := re.search(r"vLLM ready at http://127.0.0.1:(\d+)/v1", line):
            port = int(match.group(1))
        if line.startswith("[1/1] gsm8k_local"):
            return port
        assert time.monotonic() < deadline
    raise AssertionError("the job ended before evaluating")


def cached_answers(home: Path) -> int:
    """Answers in lm-eval's request cache (one SQLite file per model)."""
    total = 0
    for db in home.glob("cache/*/requests*"):
        with sqlite3.connect(db) as conn:
            total += sum(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for (t,) in tables(conn))
    return total


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def tables(conn: sqlite3.Connection) -> list[tuple[str]]:
    return conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()


def vllm_pgid(port: int) -> int:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        args = cmdline.read_bytes().split(b"\0")
        if b"--port" in args and args[args.index(b"--port") + 1] == str(port).encode():
            return os.getpgid(int(cmdline.parent.name))
    raise AssertionError(f"no vLLM on port {port}")


def test_killed_server_then_killed_job_then_the_rerun_resumes(model_dir, tmp_path):
    job = start(model_dir, tmp_path)
    port = until_evaluating(job)
    time.sleep(10)  # some answers are cached, others in flight
    killed_at = time.monotonic()
    os.killpg(vllm_pgid(port), signal.SIGKILL)
    output = job.communicate(timeout=120)[0]
    print(f"job failed {time.monotonic() - killed_at:.1f} s after vLLM was killed")
    assert job.returncode != 0 and time.monotonic() - killed_at < 60
    assert "vLLM died; last lines of" in output and "is gone; last error:" in output, output[-3000:]
    after_server_kill = cached_answers(tmp_path)

    job = start(model_dir, tmp_path)
    port = until_evaluating(job)
    time.sleep(4)
    job.send_signal(signal.SIGKILL)  # the evaluation process: no handler runs
    job.wait(30)
    deadline = time.monotonic() + 30
    while serving_port_alive(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not serving_port_alive(port)  # its server died with it (parent-death signal)
    databases = [*tmp_path.glob("cache/*/requests*"), *tmp_path.glob("results.sqlite")]
    assert databases and all(integrity(db) == "ok" for db in databases)  # SQLite transactions: nothing torn
    cached = cached_answers(tmp_path)
    print(f"cached answers: {after_server_kill} after the server kill, {cached} after the job kill")
    assert 0 < after_server_kill <= cached <= LIMIT

    rerun = start(model_dir, tmp_path)
    output = rerun.communicate(timeout=900)[0]
    assert rerun.returncode == 0, output[-3000:]
    sent = int(re.search(r"on 16 examples in [\d.]+ s, (\d+) requests answered by the server", output).group(1))
    print(f"re-run sent {sent} requests; {LIMIT - cached} were not cached")
    assert LIMIT - cached <= sent <= LIMIT - cached + CONCURRENCY
    assert not list(tmp_path.glob("bundles/**/.*"))  # no half-written bundle file
