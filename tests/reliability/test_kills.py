"""Processes die mid-benchmark. vLLM SIGKILLed: the job fails at once with the tail of the server log. The
evaluation process SIGKILLed: the results store stays intact and its server goes with it. Either way the
next run resumes from the request cache, repeating at most the requests that were in flight. With W&B offline,
the result has one run (the id an uninterrupted run gets, one folder per id) and the leaderboard one row."""

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaljobs.engine.spec import Settings
from evaljobs.engine.tracking import run_id
from tests.test_interrupt import serving_port_alive
from tests.wandb_records import read_run, run_folders, table_rows

pytestmark = pytest.mark.vllm
LIMIT, CONCURRENCY, MAX_TOKENS = 16, 4, 64
MODEL = "smollm2-135m-instruct"


def start(model_dir: Path, home: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "evaljobs.cli", "run", "--checkpoint", str(model_dir)]
    command += ["--benchmarks", "gsm8k_local", "--limit", str(LIMIT), "--max-tokens", str(MAX_TOKENS)]
    command += ["--concurrency", str(CONCURRENCY), "--results-home", str(home), "--project", "kills"]
    command += ["--wandb", "offline"]
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


def until_cached(home: Path, at_least: int, timeout: float = 300) -> None:
    """Wait until the request cache holds ``at_least`` answers (some done, the rest still in flight)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cached_answers(home) >= at_least:
                return
        except sqlite3.Error:  # created or written right now
            pass
        time.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} answers cached after {timeout} s")


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
    until_cached(tmp_path, 2)  # some answers are cached, others in flight
    killed_at = time.monotonic()
    os.killpg(vllm_pgid(port), signal.SIGKILL)
    output = job.communicate(timeout=120)[0]
    print(f"job failed {time.monotonic() - killed_at:.1f} s after vLLM was killed")
    assert job.returncode != 0 and time.monotonic() - killed_at < 60
    assert "vLLM died; last lines of" in output and "is gone; last error:" in output, output[-3000:]
    after_server_kill = cached_answers(tmp_path)

    job = start(model_dir, tmp_path)
    port = until_evaluating(job)
    until_cached(tmp_path, after_server_kill + 1)
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
    sent = int(re.search(rf"on {LIMIT} examples in [\d.]+ s, (\d+) requests answered by the server", output).group(1))
    print(f"re-run sent {sent} requests; {LIMIT - cached} were not cached")
    assert LIMIT - cached <= sent <= LIMIT - cached + CONCURRENCY
    assert not list(tmp_path.glob("bundles/**/.*"))  # no half-written bundle file

    # W&B: the id of an uninterrupted run, one folder per id; the leaderboard: one row, in each of its forms.
    expected = run_id("kills", MODEL, "gsm8k_local", Settings(limit=LIMIT, max_tokens=MAX_TOKENS).score_hash())
    board_id = re.search(r"leaderboard run (\S+): wandb sync", output).group(1)
    folders = run_folders(tmp_path / "wandb")
    assert {rid: len(f) for rid, f in folders.items()} == {expected: 1, board_id: 1}
    run = read_run(folders[expected][0])
    assert (run.run["id"], run.summary["n_samples"], run.exit_code) == (expected, LIMIT, 0)
    board = json.loads((tmp_path / "leaderboards" / "kills.json").read_text())
    [row] = board["rows"]
    assert (row["model"], list(row["scores"])) == (MODEL, ["gsm8k_local"])
    with (tmp_path / "leaderboards" / "kills.csv").open() as f:
        assert [r["model"] for r in csv.DictReader(f)] == [MODEL]
    [logged] = table_rows(folders[board_id][0], "leaderboard")
    assert (logged["model"], logged["gsm8k_local"]) == (MODEL, row["scores"]["gsm8k_local"])
