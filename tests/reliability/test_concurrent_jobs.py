"""8 jobs at once, each a real `evaljobs run` process against the session's vLLM server (as a hosted model), all
writing to one results store and publishing one project's leaderboard (JSON, CSV, its W&B offline leaderboard
run, the report). Each job has its own seed, hence its own row: afterwards every place holds exactly 8 rows."""

import csv
import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from evaljobs.engine.results import ResultsStore
from evaljobs.engine.spec import Settings
from evaljobs.engine.tracking import run_id
from tests.wandb_records import read_run, run_folders, table_rows

pytestmark = pytest.mark.vllm
JOBS, LIMIT, MAX_TOKENS = 8, 2, 16


def job(url: str, home, seed: int) -> list[str]:
    command = [sys.executable, "-m", "evaljobs.cli", "run", "--base-url", url, "--model", "smollm2"]
    command += ["--api", "completions", "--api-key-secret", "TEAM_KEY", "--benchmarks", "gsm8k_local"]
    command += ["--limit", str(LIMIT), "--max-tokens", str(MAX_TOKENS), "--seed", str(seed), "--concurrency", "2"]
    return command + ["--results-home", str(home), "--project", "many", "--wandb", "offline"]


def test_eight_jobs_at_once_lose_and_duplicate_no_row(vllm_server, api_key, tmp_path):
    env = os.environ | {"TEAM_KEY": api_key}
    seeds = range(1, JOBS + 1)
    pipe = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    jobs = [subprocess.Popen(job(vllm_server.base_url, tmp_path, s), env=env, **pipe) for s in seeds]
    outputs = [j.communicate(timeout=900)[0] for j in jobs]
    assert [j.returncode for j in jobs] == [0] * JOBS, "\n".join(o[-1500:] for o in outputs)
    hashes = Counter(Settings(limit=LIMIT, max_tokens=MAX_TOKENS, seed=s).score_hash() for s in seeds)
    assert len(hashes) == JOBS

    stored = ResultsStore(tmp_path).rows("many")
    assert Counter(r.settings_hash for r in stored) == hashes and {r.n_samples for r in stored} == {LIMIT}

    board = json.loads((tmp_path / "leaderboards" / "many.json").read_text())
    assert Counter(r["settings_hash"] for r in board["rows"]) == hashes
    variants = Counter(r["variant"] for r in board["rows"])
    assert variants == Counter(f"seed={s}" for s in seeds)
    with (tmp_path / "leaderboards" / "many.csv").open() as f:
        assert Counter(r["variant"] for r in csv.DictReader(f)) == variants

    folders = run_folders(tmp_path / "wandb")
    evaluations = {run_id("many", "smollm2", "gsm8k_local", h) for h in hashes}
    [board_id] = set(folders) - evaluations
    assert set(folders) == evaluations | {board_id} and all(len(f) == 1 for f in folders.values())
    [board_run] = folders[board_id]
    assert read_run(board_run).run["job_type"] == "leaderboard"
    assert Counter(r["variant"] for r in table_rows(board_run, "leaderboard")) == variants
    report = (tmp_path / "reports" / "many" / "index.html").read_text()
    assert all(f"seed={s}" in report for s in seeds)
