"""An Airflow task killed while it owns a vLLM server leaves no process behind, checked in the process table.

WandbEvalOperator in local mode (its `evaljobs run` child starts vLLM): the task gets SIGTERM (Airflow's
on_kill path), or its process is SIGKILLed and no handler runs. VLLMServeOperator, whose server outlives its
task by design: the evaluation task in between is killed, and the teardown still stops the server. Each run is
a real `airflow dags test`, which runs the tasks in its own process: that process is the task process."""

import os
import re
import signal
import time
from pathlib import Path

import pytest

from evaljobs.engine.serving import group_alive
from tests.test_interrupt import serving_port_alive

pytestmark = pytest.mark.vllm
GONE_WITHIN = 60  # seconds from the kill until no process of the job or its server runs

OWNS_A_SERVER = """
from airflow.sdk import dag
from evaljobs.operators.evaluate import WandbEvalOperator

@dag(dag_id="owns", schedule=None)
def owns():
    WandbEvalOperator(task_id="evaluate", checkpoint={model!r}, benchmarks="gsm8k_local", project="kill",
                      settings={{"limit": 40, "max_tokens": 256}}, server_resources={{"max_model_len": 1024}},
                      results_home={home!r}, wandb_mode="disabled")

owns()
"""

SHARES_A_SERVER = """
from airflow.sdk import dag
from evaljobs.operators.evaluate import WandbEvalOperator
from evaljobs.operators.serve import VLLMServeOperator, VLLMStopOperator

@dag(dag_id="shares", schedule=None)
def shares():
    serve = VLLMServeOperator(task_id="serve", checkpoint={model!r}, server_resources={{"max_model_len": 1024}})
    evaluate = WandbEvalOperator(task_id="evaluate", server=serve.output, benchmarks="gsm8k_local", project="kill",
                                 settings={{"limit": 40, "max_tokens": 256}}, results_home={home!r},
                                 wandb_mode="disabled")
    serve >> evaluate >> VLLMStopOperator(task_id="stop", server=serve.output).as_teardown(setups=serve)

shares()
"""


def read_until(run, marker: str, seen: list[str]) -> None:
    """Read the run's output into ``seen`` until a line holds ``marker`` (the job's lines are task log lines)."""
    deadline = time.monotonic() + 600
    for line in run.stdout:
        seen.append(line)
        if marker in line:
            return
        assert time.monotonic() < deadline
    raise AssertionError("the run ended first:\n" + "".join(seen[-60:]))


def mentioning(text: str) -> list[int]:
    """Running processes whose command line contains ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes()
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text.encode() in args and state != "Z":
            found.append(int(cmdline.parent.name))
    return found


def vllm_pid(port: int) -> int:
    [pid] = [p for p in mentioning(f"--port\0{port}\0") if b"vllm" in Path(f"/proc/{p}/cmdline").read_bytes()]
    return pid


def seconds_until_gone(port: int, pgid: int, job_marker: str) -> float:
    """Seconds until no vLLM answers on ``port``, no process of its group runs (engine core, workers) and no
    process mentions ``job_marker`` (the `evaljobs run` child); fails after GONE_WITHIN."""
    started = time.monotonic()
    while serving_port_alive(port) or group_alive(pgid) or mentioning(job_marker):
        assert time.monotonic() - started < GONE_WITHIN, f"orphans: {mentioning(job_marker)}, vLLM group {pgid}"
        time.sleep(0.2)
    return time.monotonic() - started


def vllm_children(pid: int) -> list[int]:
    return [p for p in mentioning("vllm.entrypoints") if ppid(Path(f"/proc/{p}")) == pid]


def ppid(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError):
        return None


def test_sigterm_to_the_task_while_its_server_starts(airflow, model_dir, tmp_path):
    """Airflow's on_kill: the `evaljobs run` child is terminated and stops the vLLM it is starting."""
    home = tmp_path / "results"
    run = airflow.start("owns", OWNS_A_SERVER.format(model=str(model_dir), home=str(home)))
    seen: list[str] = []
    read_until(run, "starting vLLM for", seen)
    [job] = mentioning(str(home))
    deadline = time.monotonic() + 60
    while not (servers := vllm_children(job)):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    [pgid] = servers
    time.sleep(3)  # vLLM is loading
    port = int(re.search(r"--port\0(\d+)\0", Path(f"/proc/{pgid}/cmdline").read_text()).group(1))
    run.send_signal(signal.SIGTERM)
    gone = seconds_until_gone(port, pgid, str(home))
    print(f"SIGTERM: the starting vLLM and the job gone {gone:.1f} s after the task was killed")
    output = "".join(seen) + run.communicate(timeout=120)[0]
    assert run.returncode != 0 and "evaljobs run exited with 130" in output, output[-3000:]


def test_sigkill_of_the_task_while_its_server_serves(airflow, model_dir, tmp_path):
    """No handler runs in the task: its `evaljobs run` child gets SIGTERM from Linux (parent-death signal)."""
    home = tmp_path / "results"
    run = airflow.start("owns", OWNS_A_SERVER.format(model=str(model_dir), home=str(home)))
    seen: list[str] = []
    read_until(run, "vLLM ready at", seen)
    port = int(re.search(r"vLLM ready at http://127.0.0.1:(\d+)/v1", "".join(seen)).group(1))
    pgid = vllm_pid(port)
    assert os.getpgid(pgid) == pgid and mentioning(str(home))  # its own group; the `evaljobs run` child
    run.send_signal(signal.SIGKILL)
    gone = seconds_until_gone(port, pgid, str(home))
    print(f"SIGKILL: vLLM and the job gone {gone:.1f} s after the task was killed")
    run.communicate(timeout=60)
    assert run.returncode == -signal.SIGKILL


def test_teardown_stops_the_shared_server_when_the_evaluation_is_killed(airflow, model_dir, tmp_path):
    home = tmp_path / "results"
    run = airflow.start("shares", SHARES_A_SERVER.format(model=str(model_dir), home=str(home)))
    seen: list[str] = []
    read_until(run, "[1/1] gsm8k_local", seen)
    pid = int(re.search(r"vLLM serves \S+ at \S+ \(pid (\d+)", "".join(seen)).group(1))
    port = int(re.search(r"--port\0(\d+)\0", Path(f"/proc/{pid}/cmdline").read_text()).group(1))
    run.send_signal(signal.SIGTERM)  # on_kill of the evaluation task: it fails, the teardown runs
    gone = seconds_until_gone(port, pid, str(home))
    print(f"shared vLLM gone {gone:.1f} s after the evaluation task was killed")
    output = "".join(seen) + run.communicate(timeout=120)[0]
    assert run.returncode != 0 and "evaljobs run exited with 130" in output, output[-3000:]
    assert f"stopped vLLM at http://127.0.0.1:{port}/v1 (pid {pid})" in output
