"""Stopping a job (SIGTERM: Airflow's on_kill, a deleted pod) stops its vLLM server, keeps what it finished,
and the next run resumes from the request cache instead of starting over."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

LIMIT = 30


def run(model_dir: Path, home: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "evaljobs.cli",
        "run",
        "--checkpoint",
        str(model_dir),
        "--benchmarks",
        "gsm8k_local",
        "--limit",
        str(LIMIT),
        "--max-tokens",
        "256",
        "--concurrency",
        "4",
        "--results-home",
        str(home),
        "--project",
        "interrupt",
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def serving_port_alive(port: int) -> bool:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"--port" in args and args[args.index(b"--port") + 1] == str(port).encode() and state != "Z":
            return True
    return False


def test_sigterm_stops_the_server_and_the_rerun_resumes(model_dir, tmp_path):
    job = run(model_dir, tmp_path)
    port, deadline = None, time.monotonic() + 600
    for line in job.stdout:
        if match := re.search(r"vLLM ready at http://127.0.0.1:(\d+)/v1", line):
            port = int(match.group(1))
        if line.startswith("[1/1] gsm8k_local"):
            break
        assert time.monotonic() < deadline
    assert port and serving_port_alive(port)
    time.sleep(12)  # some answers arrive and are cached, others are still in flight
    job.send_signal(signal.SIGTERM)
    assert job.wait(90) == 130
    assert not serving_port_alive(port)

    rerun = run(model_dir, tmp_path)
    output = rerun.communicate(timeout=900)[0]
    assert rerun.returncode == 0, output[-3000:]
    sent = int(re.search(r"on 30 examples in [\d.]+ s, (\d+) requests answered by the server", output).group(1))
    assert sent < LIMIT  # the interrupted run's answers were kept
    bundle = next(tmp_path.glob("bundles/interrupt/*/gsm8k_local/*/samples.jsonl"))
    assert len([json.loads(line) for line in bundle.read_text().splitlines()]) == LIMIT
