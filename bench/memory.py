"""Memory: peak RSS of `evaljobs run` on generated multiple-choice benchmarks of growing size.

Each size (default 1,000 and 10,000 rows; two choices a row, ~300 characters of prompt) is a custom
benchmark file evaluated by its own `evaljobs run` process against the latency-bound endpoint
(tests/latency_endpoint.py, L = 5 ms, C = 64, settings.concurrency 64), with W&B offline so the per-example
Tables are written (with ``--attribute``, the smallest and largest once more with W&B disabled, to separate
what W&B logging adds). The process tree is polled every 0.1 s: the evaluation process's peak (VmHWM) and the
tree's peak (with wandb-core).

Target: flat in the number of rows: samples streamed to disk and to W&B in chunks, so the peak of 10,000 rows
stays within 10 % of the peak of 1,000 rows; MiB per 1,000 rows is the slope between the smallest and largest.

    .venv/bin/python bench/memory.py [--sizes 1000,5000,10000 --attribute]
Prints a table and writes bench/out/memory.json.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml
from common import REPO, peak_rss_mib, table, write
from tests.latency_endpoint import LatencyEndpoint

from evaljobs.engine.spec import default_results_home

FLAT = 1.10  # the largest size's peak over the smallest's


def benchmark_file(folder: Path, rows: int) -> Path:
    """A two-choice custom benchmark of ``rows`` generated questions."""
    rng = random.Random(rows)
    data = folder / f"rows-{rows}.jsonl"
    with data.open("w") as f:
        for i in range(rows):
            words = " ".join(
                rng.choice(["alpha", "beta", "gamma", "delta", "river", "stone", "cloud"]) for _ in range(40)
            )
            f.write(json.dumps({"question": f"Question {i}: {words}. True or false?", "gold": rng.randrange(2)}) + "\n")
    spec = {
        "name": f"generated_{rows}",
        "type": "multiple_choice",
        "data": str(data),
        "prompt": "{{question}}\nAnswer:",
        "choices": "{{['true', 'false']}}",
        "answer": "gold",
        "answer_format": "index",
    }
    path = folder / f"generated_{rows}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run(spec: dict, folder: Path, name: str) -> dict:
    """`evaljobs run` on ``spec`` in its own process; peak RSS of it and of its process tree."""
    spec_path = folder / f"{name}.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    cli = str(Path(sys.executable).parent / "evaljobs")
    log = (folder / f"{name}.log").open("w")
    started = time.perf_counter()
    process = subprocess.Popen([cli, "run", "--spec", str(spec_path)], stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    main, peak, tree_peak = psutil.Process(process.pid), 0.0, 0.0
    while process.poll() is None:
        try:
            peak = peak_rss_mib(process.pid)
            tree = [main, *main.children(recursive=True)]
            tree_peak = max(tree_peak, sum(p.memory_info().rss for p in tree if p.is_running()) / 2**20)
        except (psutil.Error, FileNotFoundError, StopIteration):
            pass
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    log.close()
    if process.returncode != 0:
        sys.exit(f"{name} failed:\n{(folder / f'{name}.log').read_text()[-3000:]}")
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(peak, 1), "tree_peak_rss_mib": round(tree_peak, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000", help="rows of the generated benchmarks")
    parser.add_argument("--latency", type=float, default=0.005)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--attribute", action="store_true", help="also run the smallest and largest with W&B disabled")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    model = default_results_home() / "models" / "smollm2-135m-instruct"
    work = Path(tempfile.mkdtemp(prefix="evaljobs-bench-memory-"))
    results: dict[str, dict] = {}
    with LatencyEndpoint(args.latency, args.concurrency) as endpoint:
        for rows in sizes:
            for wandb in ("offline", "disabled") if args.attribute and rows in (sizes[0], sizes[-1]) else ("offline",):
                name = f"{rows}-{wandb}"
                print(f"evaljobs run: {rows} rows, W&B {wandb} ...", flush=True)
                spec = {
                    "model": {"checkpoint": str(model), "endpoint": endpoint.base_url, "model": "latency-model"},
                    "benchmarks": [str(benchmark_file(work, rows))],
                    "settings": {"concurrency": args.concurrency},
                    "destination": {
                        "project": f"memory-{name}",
                        "results_home": str(work / name),
                        "wandb": wandb,
                        "publish_leaderboard": False,
                    },
                    "job_id": f"memory-{name}",
                }
                results[name] = run(spec, work, name) | {"rows": rows, "wandb": wandb}
                bundle = next((work / name).rglob("samples.jsonl"))
                results[name]["samples_jsonl_mib"] = round(bundle.stat().st_size / 2**20, 1)

    base = results[f"{sizes[0]}-offline"]
    rows_out = []
    for r in results.values():
        rows_out.append(
            [
                f"{r['rows']} rows, W&B {r['wandb']}",
                r["seconds"],
                r["samples_jsonl_mib"],
                r["peak_rss_mib"],
                r["tree_peak_rss_mib"],
                r["peak_rss_mib"] / base["peak_rss_mib"],
            ]
        )
    text = table(
        "evaljobs run against the latency endpoint: peak RSS by benchmark size",
        ["job", "wall s", "samples MiB", "peak RSS MiB", "tree peak MiB", "x smallest"],
        rows_out,
    )
    targets, slopes = [], {}
    for wandb in ("offline", "disabled") if args.attribute else ("offline",):
        small, large = results[f"{sizes[0]}-{wandb}"], results[f"{sizes[-1]}-{wandb}"]
        slope = (large["peak_rss_mib"] - small["peak_rss_mib"]) / ((sizes[-1] - sizes[0]) / 1000)
        ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
        slopes[wandb] = round(slope, 2)
        print(f"W&B {wandb}: {slope:.2f} MiB per 1,000 rows; {sizes[-1]} rows / {sizes[0]} rows = {ratio:.2f}x")
        targets.append(
            {
                "name": f"memory: peak RSS {sizes[-1]} rows / {sizes[0]} rows (W&B {wandb})",
                "value": round(ratio, 2),
                "target": f"<= {FLAT}",
                "unit": "x",
                "met": ratio <= FLAT,
            }
        )
    path = write(
        "memory",
        {
            "latency": args.latency,
            "concurrency": args.concurrency,
            "runs": results,
            "mib_per_1000_rows": slopes,
            "table": text,
            "targets": targets,
        },
    )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
