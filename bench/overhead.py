"""Harness overhead against the server-bound limit, and the request cache, on the latency-bound endpoint.

The endpoint (tests/latency_endpoint.py) answers every request in exactly L seconds, at most C at a time, so
N requests need at least ceil(N / C) x L: the limit. The workload is 100 GSM8K generations + 100
ARC-Challenge questions (400 log-likelihood requests): N = 500, from ../shared/benchdata. For L = 50 ms and
500 ms, C = 64, side by side in one run, each side a fresh process with an empty request cache:
- our job (`evaljobs run`, concurrency 64), as users run it: W&B offline runs, leaderboard and report;
- our job with tracking and publishing off (the harness alone);
- `lm_eval --model local-completions` with its defaults (num_concurrent=1), and with --lm-eval-concurrent
  also with num_concurrent=64.
Fixed overhead = process start to the first request + last answer to exit (measured at the endpoint); the
request phase is the rest. Targets (issue 7): wall <= 1.10 x (limit + fixed), start-up <= 3 s, >= 5x faster
than lm-eval's defaults; the fixed overhead (start-up + tail) is reported.
Cache: re-running the finished job sends 0 requests; a job SIGKILLed half-way and re-run repeats at most
the requests that were in flight (C).

    .venv/bin/python bench/overhead.py [--limit 100] [--latencies 0.05 0.5] [--lm-eval-concurrent]
Prints the tables and writes bench/out/overhead.json.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # noqa: F401  (paths and environment)
import yaml
from common import table, task_yaml, write
from tests.latency_endpoint import LatencyEndpoint, limit

from evaljobs.engine.modelprep import prepare_embedded
from evaljobs.engine.spec import default_results_home

BENCHMARKS = ["arc_challenge_local", "gsm8k_local"]
CONCURRENCY = 64
BIN = Path(sys.executable).parent


def spec_file(work: Path, endpoint: LatencyEndpoint, model: Path, home: Path, rows: int, tracking: bool) -> Path:
    spec = {
        "model": {"checkpoint": str(model), "endpoint": endpoint.base_url, "model": "latency-model"},
        "benchmarks": BENCHMARKS,
        "settings": {"limit": rows, "concurrency": CONCURRENCY},
        "destination": {
            "project": "overhead",
            "results_home": str(home),
            "wandb": "offline" if tracking else "disabled",
            "publish_leaderboard": tracking,
        },
    }
    path = work / f"spec-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def measured(endpoint: LatencyEndpoint, command: list[str], kill_after: int | None = None) -> dict[str, Any]:
    """Run ``command`` to its end (or SIGKILL it once ``kill_after`` requests were answered); time it and
    count its requests at the endpoint."""
    before = endpoint.reset()
    started = time.time()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    answered_at_kill = None
    if kill_after is not None:
        while process.poll() is None:
            if (answered := endpoint.stats()["requests"] - before["requests"]) >= kill_after:
                os.killpg(process.pid, signal.SIGKILL)
                answered_at_kill = answered
                break
            time.sleep(0.02)
    output = process.communicate()[0].decode(errors="replace")
    wall = time.time() - started
    if kill_after is None and process.returncode != 0:
        sys.exit(f"{' '.join(command[:3])} failed:\n{output[-3000:]}")
    after = endpoint.stats()
    requests = after["requests"] - before["requests"]
    first, last = after["first_arrival"], after["last_answer"]
    fresh = requests > 0 and first is not None
    return {
        "seconds": round(wall, 3),
        "requests": requests,
        "http_requests": after["http_requests"] - before["http_requests"],
        "startup": round(first - started, 3) if fresh else None,
        "tail": round(started + wall - last, 3) if fresh else None,
        "answered_at_kill": answered_at_kill,
    }


def lm_eval(endpoint: LatencyEndpoint, model: Path, tasks: Path, work: Path, rows: int, concurrent: int | None):
    args = (
        f"model=latency-model,base_url={endpoint.base_url}/completions,tokenizer={model},tokenizer_backend=huggingface"
    )
    if concurrent:
        args += f",num_concurrent={concurrent}"
    command = [str(BIN / "lm_eval"), "--model", "local-completions", "--model_args", args]
    command += ["--include_path", str(tasks), "--tasks", ",".join(BENCHMARKS), "--limit", str(rows)]
    return measured(endpoint, command + ["--output_path", str(work / f"lm-eval-{time.monotonic_ns()}")])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=100, help="rows per benchmark")
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.05, 0.5])
    parser.add_argument(
        "--lm-eval-concurrent", action="store_true", help="also lm_eval with num_concurrent=64 (~40 s; no target)"
    )
    args = parser.parse_args()

    model = prepare_embedded(default_results_home() / "models" / "smollm2-135m-instruct").path
    work = Path(tempfile.mkdtemp(prefix="evaljobs-overhead-"))
    tasks = work / "tasks"
    tasks.mkdir()
    for name in BENCHMARKS:  # the same compiled task configs, as files for lm_eval's --include_path
        (tasks / f"{name}.yaml").write_text(task_yaml(name))
    evaljobs = [str(BIN / "evaljobs"), "run", "--spec"]

    def ours(endpoint: LatencyEndpoint, home: Path, tracking: bool, kill_after: int | None = None) -> dict:
        spec = spec_file(work, endpoint, model, home, args.limit, tracking)
        return measured(endpoint, [*evaljobs, str(spec)], kill_after)

    result: dict[str, Any] = {"workload": {"benchmarks": BENCHMARKS, "rows": args.limit, "concurrency": CONCURRENCY}}
    result["latencies"], targets, rows = {}, [], []
    for latency in args.latencies:
        with LatencyEndpoint(latency, CONCURRENCY) as endpoint:
            sides = {
                "evaljobs job (W&B offline, report)": ours(endpoint, work / f"home-{latency}", True),
                "evaljobs job, tracking off": ours(endpoint, work / f"home-{latency}-plain", False),
                "lm_eval defaults (num_concurrent=1)": lm_eval(endpoint, model, tasks, work, args.limit, None),
            }
            if args.lm_eval_concurrent:
                sides["lm_eval num_concurrent=64"] = lm_eval(endpoint, model, tasks, work, args.limit, CONCURRENCY)
        n = sides["lm_eval defaults (num_concurrent=1)"]["http_requests"]
        bound = limit(n, latency, CONCURRENCY)
        for label, side in sides.items():
            fixed = (side["startup"] or 0) + (side["tail"] or 0)
            side |= {"fixed": round(fixed, 3), "request_phase": round(side["seconds"] - fixed, 3)}
            side["x_limit_plus_fixed"] = round(side["seconds"] / (bound + fixed), 3)
            rows.append(
                [
                    f"L={latency * 1000:.0f} ms  {label}",
                    side["seconds"],
                    side["requests"],
                    side["startup"],
                    side["request_phase"],
                    side["tail"],
                    bound,
                    side["x_limit_plus_fixed"],
                ]
            )
        job, plain = sides["evaljobs job (W&B offline, report)"], sides["evaljobs job, tracking off"]
        speedup = sides["lm_eval defaults (num_concurrent=1)"]["seconds"] / job["seconds"]
        result["latencies"][str(latency)] = {
            "limit": bound,
            "requests": n,
            "sides": sides,
            "speedup": round(speedup, 2),
        }
        for label, side in (("job", job), ("harness", plain)):
            targets.append(
                {
                    "name": f"L={latency}s {label} wall / (limit + fixed)",
                    "value": side["x_limit_plus_fixed"],
                    "target": 1.10,
                    "unit": "x",
                    "met": side["x_limit_plus_fixed"] <= 1.10,
                }
            )
            targets.append(
                {
                    "name": f"L={latency}s {label} start-up (process start -> first request)",
                    "value": side["startup"],
                    "target": 3.0,
                    "unit": "s",
                    "met": side["startup"] <= 3.0,
                }
            )
            targets.append(
                {
                    "name": f"L={latency}s {label} fixed (start-up + tail)",
                    "value": side["fixed"],
                    "target": "-",
                    "unit": "s",
                    "met": None,
                }
            )
        targets.append(
            {
                "name": f"L={latency}s speed-up over lm_eval defaults",
                "value": round(speedup, 2),
                "target": 5.0,
                "unit": "x (at least)",
                "met": speedup >= 5.0,
            }
        )
    table(
        f"Harness overhead: {args.limit} GSM8K + {args.limit} ARC-Challenge rows, C={CONCURRENCY} (seconds)",
        ["", "wall", "requests", "start-up", "requests phase", "tail", "limit", "wall/(limit+fixed)"],
        rows,
    )

    latency = max(args.latencies)
    with LatencyEndpoint(latency, CONCURRENCY) as endpoint:
        home = work / "home-cache"
        first = ours(endpoint, home, False)
        again = ours(endpoint, home, False)
        killed_home = work / "home-killed"
        killed = ours(endpoint, killed_home, False, kill_after=first["requests"] // 2)
        rerun = ours(endpoint, killed_home, False)
    still_needed = first["requests"] - killed["answered_at_kill"]
    repeated = rerun["requests"] - still_needed
    result["cache"] = {
        "first": first,
        "rerun_finished": again,
        "killed": killed,
        "rerun_killed": rerun,
        "repeated_after_kill": repeated,
    }
    targets.append(
        {
            "name": "re-run of a finished job: requests",
            "value": again["requests"],
            "target": 0,
            "unit": "requests",
            "met": again["requests"] == 0,
        }
    )
    targets.append(
        {
            "name": "re-run after SIGKILL: repeated requests",
            "value": repeated,
            "target": CONCURRENCY,
            "unit": "requests (at most)",
            "met": 0 <= repeated <= CONCURRENCY,
        }
    )
    table(
        f"Request cache (L={latency * 1000:.0f} ms)",
        ["", "requests", "wall"],
        [
            ["first run", first["requests"], first["seconds"]],
            ["re-run of the finished job", again["requests"], again["seconds"]],
            [f"run SIGKILLed after {killed['answered_at_kill']} answers", killed["requests"], killed["seconds"]],
            [f"its re-run (needed {still_needed}, repeated {repeated})", rerun["requests"], rerun["seconds"]],
        ],
    )
    result["targets"] = targets
    print(f"written to {write('overhead', result)}")


if __name__ == "__main__":
    main()
