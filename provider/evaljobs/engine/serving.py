"""vLLM's OpenAI-compatible server: the command line from the spec, a local process, readiness, stop.

The server runs from its own Python (``EVALJOBS_VLLM_PYTHON``, e.g. ``.venv-vllm/bin/python``) because vLLM
pins torch/numpy/transformers versions that must not mix with Airflow's. It is started in its own process
group so that stopping it also stops its engine workers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from evaljobs.engine.errors import ServingError
from evaljobs.engine.spec import Resources

LOG_TAIL_LINES = 40


def vllm_python() -> str:
    """The interpreter that has vLLM: ``$EVALJOBS_VLLM_PYTHON`` or the current one."""
    return os.environ.get("EVALJOBS_VLLM_PYTHON") or sys.executable


def vllm_command(
    model_dir: str,
    served_name: str,
    resources: Resources,
    port: int,
    python: str | None = None,
    host: str = "127.0.0.1",
) -> list[str]:
    """The vLLM server command for ``model_dir``; the same one runs locally and in a pod."""
    dtype = resources.dtype
    if dtype == "auto" and resources.gpus == 0:
        dtype = "float32"  # CPU: exact log-likelihoods, and bf16 kernels are slow without AVX512-BF16
    command = [
        python or vllm_python(),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model_dir),
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        dtype,
        "--max-model-len",
        str(resources.max_model_len),
        "--enable-prefix-caching",
    ]
    if resources.enforce_eager or (resources.enforce_eager is None and resources.gpus == 0):
        command.append("--enforce-eager")
    kv_cache_gib = resources.kv_cache_gib or (2.0 if resources.gpus == 0 else None)
    if kv_cache_gib:
        # On CPU, vLLM otherwise reserves a fraction of the whole machine's memory and refuses to start.
        command += ["--kv-cache-memory-bytes", str(int(kv_cache_gib * 2**30))]
    if resources.gpus > 1:
        command += ["--tensor-parallel-size", str(resources.gpus)]
    if resources.tool_call_parser:
        command += ["--enable-auto-tool-choice", "--tool-call-parser", resources.tool_call_parser]
    return command


def stop_group(pgid: int, grace: float = 20.0) -> None:
    """SIGTERM a server's process group (API server and engine workers), SIGKILL what is left after ``grace``
    seconds, and return once no process of the group runs. Works from any process (an Airflow teardown)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not group_alive(pgid):
                return
            time.sleep(0.1)


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs. Reaps the leader if it is our child; zombies whose
    parent has not reaped them yet (it may be another process) do not count as running."""
    try:
        os.waitpid(pgid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":  # fields after the name: state, ppid, pgrp, ...
            return True
    return False


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGTERM the child when its parent dies, so a killed task leaves no
    orphan job or server (the parent is the thread that starts the child: it must outlive the child).

    libc is loaded here, in the parent: between fork and exec the child may only call the resolved function.
    Loading it there (``dlopen``) deadlocks when another thread of the parent held the loader's lock at fork."""
    if sys.platform != "linux":
        return None
    import ctypes

    prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl

    def set_parent_death_signal() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return set_parent_death_signal


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    """A running vLLM server owned by this process."""

    base_url: str
    model: str
    process: subprocess.Popen
    log_path: Path
    api_key: str | None = field(default=None, repr=False)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 20.0) -> None:
        """Stop the server's whole process group (see :func:`stop_group`). Safe to call twice."""
        stop_group(self.process.pid, grace)
        self.process.poll()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(
    model_dir: str | Path,
    served_name: str,
    resources: Resources,
    log_dir: str | Path,
    python: str | None = None,
    api_key: str | None = None,
    detach: bool = False,
) -> Server:
    """Start vLLM for ``model_dir`` and wait until it answers; stop it again if it does not.

    With ``api_key``, the server requires it on /v1 routes; it travels in the child's environment
    (``VLLM_API_KEY``), never on the command line. A ``detach``-ed server outlives this process (an Airflow
    setup task); stop it with :func:`stop_group` from its teardown.
    """
    port = free_port()
    log_path = Path(log_dir) / "vllm.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = vllm_command(str(model_dir), served_name, resources, port, python)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"} | ({"VLLM_API_KEY": api_key} if api_key else {})
    with log_path.open("ab") as log:
        try:
            process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                preexec_fn=None if detach else die_with_parent(),
            )
        except OSError as exc:
            raise ServingError(
                f"cannot start vLLM with {command[0]}: {exc}; set EVALJOBS_VLLM_PYTHON "
                "to the Python of the environment that has vLLM"
            ) from None
    server = Server(f"http://127.0.0.1:{port}/v1", served_name, process, log_path, api_key)
    try:
        wait_ready(server, resources.startup_timeout)
    except BaseException:
        server.stop()
        raise
    return server


def wait_ready(server: Server, timeout: float, poll: float = 0.5) -> None:
    """Wait until ``/health`` answers 200 and ``/v1/models`` lists the model, within ``timeout`` seconds."""
    root = server.base_url.removesuffix("/v1")
    deadline = time.monotonic() + timeout
    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    with httpx.Client(timeout=5.0, headers=headers) as client:
        while time.monotonic() < deadline:
            if not server.alive():
                raise ServingError(
                    f"vLLM exited with code {server.process.returncode} before it was ready "
                    f"(log: {server.log_path}). Last lines:\n{server.log_tail()}"
                )
            try:
                if client.get(f"{root}/health").status_code == 200:
                    models = client.get(f"{server.base_url}/models").json()
                    if any(m.get("id") == server.model for m in models.get("data", [])):
                        return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(poll)
    raise ServingError(
        f"vLLM did not become ready within {timeout:.0f} s (resources.startup_timeout). Check that the "
        f"model is supported by this vLLM version and fits the memory (log: {server.log_path}). "
        f"Last lines:\n{server.log_tail()}"
    )
