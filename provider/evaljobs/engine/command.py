"""The one command that runs a job, built here for local processes and pods; and the request-cache check of a
job, run as a child process."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from evaljobs.engine.errors import HarnessError
from evaljobs.engine.results import write_json
from evaljobs.engine.serving import die_with_parent
from evaljobs.engine.spec import JobSpec


def run_command(spec_file: str | Path, summary_file: str | Path, python: str | None = None) -> list[str]:
    """``evaljobs run`` for a spec file, writing the job summary JSON to ``summary_file``."""
    return [
        python or sys.executable,
        "-m",
        "evaljobs.cli",
        "run",
        "--spec",
        str(spec_file),
        "--summary-out",
        str(summary_file),
    ]


def run_local(
    spec: JobSpec,
    secrets: Mapping[str, str] | None = None,
    started: Callable[[subprocess.Popen], None] | None = None,
    log: logging.Logger | Any = None,
) -> dict[str, Any]:
    """Run ``spec`` as a child ``evaljobs run`` process; return its summary.

    Each line the child writes reaches ``log`` (an Airflow task's logger; default this module's): its stdout
    (the job's messages and progress) as INFO, its stderr (what went wrong, or a library's warning) as WARNING.
    ``secrets`` reach the child as environment only; ``started`` receives the process (to terminate it). The
    child gets SIGTERM when this process dies, even by SIGKILL, and then stops its vLLM server."""
    log = log or logging.getLogger(__name__)
    workdir = spec.destination.results_home / "jobs" / spec.job_id
    spec_file, summary_file = workdir / "spec.json", workdir / "summary.json"
    write_json(spec_file, spec.model_dump(mode="json"))
    summary_file.unlink(missing_ok=True)
    code = _run(run_command(spec_file, summary_file), {**os.environ, **(secrets or {})}, log, started)
    if code != 0:
        raise HarnessError(
            f"evaluation job {spec.job_id} failed (evaljobs run exited with {code}); "
            f"its messages are above, finished benchmarks are under {spec.destination.results_home}"
        )
    return json.loads(summary_file.read_text())


def answered_by_cache(spec: JobSpec, log: logging.Logger | Any = None) -> bool:
    """:func:`evaljobs.engine.job.answered_by_cache` in a child process (lm-eval stays out of this one), its
    lines relayed to ``log`` as :func:`run_local` relays them."""
    log = log or logging.getLogger(__name__)
    spec_file = spec.destination.results_home / "jobs" / spec.job_id / "cache-check.json"
    write_json(spec_file, spec.model_dump(mode="json"))
    command = [sys.executable, "-m", "evaljobs.engine.command", str(spec_file)]
    return _run(command, dict(os.environ), log) == 0


def _run(command: list[str], env: dict[str, str], log: Any, started: Callable | None = None) -> int:
    """Run ``command``, each line of its stdout to ``log.info`` and of its stderr to ``log.warning``."""
    process = subprocess.Popen(
        command,
        env=env,
        preexec_fn=die_with_parent(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    if started:
        started(process)
    relays = [
        threading.Thread(target=_relay, args=(stream, level), daemon=True)
        for stream, level in ((process.stdout, log.info), (process.stderr, log.warning))
    ]
    for relay in relays:
        relay.start()
    process.wait()
    for relay in relays:
        relay.join()
    return process.returncode


def _relay(stream: IO[str], emit: Callable[[str], None]) -> None:
    """Each non-blank line of ``stream`` to ``emit``, as it arrives."""
    for line in stream:
        if line.strip():
            emit(line.rstrip())


if __name__ == "__main__":  # the child of answered_by_cache: exit 0 when the cache answers every request
    from evaljobs.engine.job import answered_by_cache as _answered

    sys.exit(0 if _answered(JobSpec.parse(json.loads(Path(sys.argv[1]).read_text()))) else 1)
