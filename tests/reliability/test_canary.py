"""Secret canaries on the failure paths, where lm-eval logs each failed request with its headers: a job in
process (every log record at DEBUG, stdout/stderr, the error and its traceback, the results home) and the CLI
with canaries for all four secrets (its output, summary and results home, W&B offline run files included).
Zero hits."""

import json
import logging
import os
import secrets
import subprocess
import sys
import traceback

import pytest

from evaljobs.engine.errors import HarnessError
from evaljobs.engine.job import run_job
from evaljobs.engine.spec import JobSpec
from tests.faults import FaultProxy

pytestmark = pytest.mark.vllm


def hosted(url: str, home, **settings) -> JobSpec:
    return JobSpec.parse(
        {
            "model": {"base_url": url, "model": "smollm2", "api": "completions", "api_key_secret": "TEAM_KEY"},
            "benchmarks": ["gsm8k_local"],
            "settings": {"limit": 4, "max_tokens": 16, "concurrency": 2, "request_timeout": 8} | settings,
            "destination": {"results_home": str(home), "wandb": "offline"},
        }
    )


def test_no_canary_in_logs_errors_or_files_when_requests_fail(vllm_server, api_key, tmp_path, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    upstream = vllm_server.base_url.removesuffix("/v1")
    with FaultProxy(upstream, rate=0.5, seed=3, stall=10) as proxy:
        result = run_job(hosted(proxy.url, tmp_path / "a"), secrets={"TEAM_KEY": api_key})
    assert proxy.injected() and result.rows[0].n_samples == 4
    with FaultProxy(upstream, rate=1.0, stall=10) as proxy, pytest.raises(HarnessError) as info:
        run_job(hosted(proxy.url, tmp_path / "b", max_retries=2), secrets={"TEAM_KEY": api_key})
    captured = capsys.readouterr()
    texts = {
        "log records": "\n".join(r.getMessage() for r in caplog.records),
        "stdout": captured.out,
        "stderr": captured.err,
        "error": "".join(traceback.format_exception(info.value)),
    }
    assert "Authorization" in texts["log records"]  # lm-eval did log the failed requests' headers
    assert [where for where, text in texts.items() if api_key in text] == []
    leaks = [p for p in tmp_path.rglob("*") if p.is_file() and api_key.encode() in p.read_bytes()]
    assert leaks == []


def cli(proxy: FaultProxy, home, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "evaljobs.cli", "run", "--base-url", proxy.url, "--model", "smollm2"]
    command += ["--api", "completions", "--api-key-secret", "TEAM_KEY", "--benchmarks", "gsm8k_local"]
    command += ["--limit", "4", "--max-tokens", "16", "--concurrency", "2", "--results-home", str(home)]
    command += ["--project", "canary", "--wandb", "offline", "--summary-out", str(home / "summary.json"), *extra]
    return subprocess.run(command, env=os.environ | env, capture_output=True, text=True, timeout=600)


def test_cli_with_every_secret_leaks_none_through_faults_or_failure(vllm_server, api_key, tmp_path):
    """The CLI (what pods and operators run) with canaries for the hosted key, W&B key, judge key and HF token:
    a run through 30 % faults and one that fails; searched: its output, tracebacks, summary and results home."""
    canaries = {
        "TEAM_KEY": api_key,
        "WANDB_API_KEY": "canary-wandb-" + secrets.token_hex(8),
        "OPENAI_API_KEY": "canary-judge-" + secrets.token_hex(8),
        "HF_TOKEN": "canary-hf-" + secrets.token_hex(8),
    }
    upstream = vllm_server.base_url.removesuffix("/v1")
    with FaultProxy(upstream, rate=0.3, seed=5, stall=10) as proxy:
        ok = cli(proxy, tmp_path, canaries)
    quick = tmp_path / "quick.json"  # fail fast: 2 retries, 8 s an attempt
    quick.write_text(json.dumps({"settings": {"max_retries": 2, "request_timeout": 8}}))
    with FaultProxy(upstream, rate=1.0, stall=10) as proxy:
        failed = cli(proxy, tmp_path, canaries, "--spec", str(quick))
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert failed.returncode != 0 and "keep failing: gave up after" in failed.stdout + failed.stderr
    outputs = {"run output": ok.stdout + ok.stderr, "failed run output": failed.stdout + failed.stderr}
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and (tmp_path / "summary.json").is_file()
    for name, value in canaries.items():
        assert [where for where, text in outputs.items() if value in text] == [], name
        assert [p for p in files if value.encode() in p.read_bytes()] == [], name
