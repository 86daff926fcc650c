"""Airflow: DAG file parse time, provider import time, leaderboard build and HTML render.

Each example DAG file is parsed by Airflow's DagBag (``process_file``, as the DAG processor does) in a fresh
process in which Airflow has already imported ``airflow.sdk`` and parsed a one-task warm-up DAG (Airflow's
own first-parse cost, ~1 s here, is paid by the DAG processor once, not per file), so the figure is the
file's own cost: its imports of the provider and the DAG's construction. The provider import (``evaljobs`` and the
operators, hooks and sensors a DAG file imports) is timed the same way; ``-X importtime`` names the slowest
modules it pulls in. Each figure is the median of ``--repeats`` fresh processes. The leaderboard and HTML
figures are bench/leaderboard_and_report.py's (a 100-model x 100-benchmark project; it takes minutes, so its
JSON is read, and the script is run first only when that JSON is missing); their targets stay in its JSON.

Targets: each DAG file parses in < 0.3 s, the provider imports in < 0.1 s, a 100 x 100 leaderboard builds in
< 1 s, the HTML report renders in < 2 s.

    .venv/bin/python bench/airflow_parse.py [--repeats 3]
Prints a table and writes bench/out/airflow_parse.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from common import OUT, REPO, table, write

PROVIDER = [
    "evaljobs",
    "evaljobs.operators.evaluate",
    "evaljobs.operators.serve",
    "evaljobs.hooks.wandb",
    "evaljobs.hooks.secrets",
    "evaljobs.sensors.leaderboard",
]
TARGETS = {"dag": 0.3, "provider": 0.1, "leaderboard build": 1.0, "html render": 2.0}
PARSE = """
import json, sys, time
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder="/nonexistent", collect_dags=False)
timed = {}
for label, path in (("warm-up", sys.argv[1]), ("file", sys.argv[2])):
    started = time.perf_counter()
    found = bag.process_file(path, only_if_updated=False, safe_mode=False)
    timed[label] = time.perf_counter() - started
if bag.import_errors:
    sys.exit(str(bag.import_errors))
print(json.dumps({"seconds": timed["file"], "warm_up": timed["warm-up"], "dags": len(found)}))
"""
WARM_UP = """
from airflow.sdk import dag, task


@dag(dag_id="bench_warm_up", schedule=None)
def bench_warm_up():
    task(lambda: None, task_id="noop")()


bench_warm_up()
"""
IMPORT = """
import importlib, json, sys, time
import airflow.sdk
print("-- timed --", file=sys.stderr, flush=True)
started = time.perf_counter()
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def fresh(code: str, *args: str, importtime: bool = False) -> tuple[dict, str]:
    """Run ``code`` in a fresh interpreter; its JSON answer and its stderr."""
    command = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", code, *args]
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        sys.exit(f"{args}: {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def slowest_imports(stderr: str, top: int = 5) -> list[tuple[str, float]]:
    """The modules with the largest self time (s) imported after the "-- timed --" marker."""
    lines = stderr.split("-- timed --", 1)[-1].splitlines()
    parsed = []
    for line in lines:
        if line.startswith("import time:") and "|" in line and "self" not in line:
            self_us, _, name = line.removeprefix("import time:").split("|")
            parsed.append((name.strip(), int(self_us) / 1e6))
    return sorted(parsed, key=lambda p: -p[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per figure (median)")
    args = parser.parse_args()

    rows, targets, result = [], [], {"repeats": args.repeats}
    dags = sorted((REPO / "dags").glob("*.py"))
    warm_up = OUT / "bench_warm_up_dag.py"
    warm_up.parent.mkdir(parents=True, exist_ok=True)
    warm_up.write_text(WARM_UP)
    result["dags"] = {}
    for path in dags:
        runs = [fresh(PARSE, str(warm_up), str(path))[0] for _ in range(args.repeats)]
        median = statistics.median(r["seconds"] for r in runs)
        warm = statistics.median(r["warm_up"] for r in runs)
        result["dags"][path.name] = {
            "median_s": round(median, 4),
            "runs_s": [round(r["seconds"], 4) for r in runs],
            "airflow_first_parse_s": round(warm, 3),
        }
        rows.append(
            [f"parse dags/{path.name} ({runs[0]['dags']} DAGs)", median, TARGETS["dag"], median / TARGETS["dag"]]
        )
        targets.append(
            {
                "name": f"parse dags/{path.name}",
                "value": round(median, 3),
                "target": f"< {TARGETS['dag']}",
                "unit": "s",
                "met": median < TARGETS["dag"],
            }
        )

    imports = [fresh(IMPORT, *PROVIDER)[0]["seconds"] for _ in range(args.repeats)]
    median = statistics.median(imports)
    culprits = slowest_imports(fresh(IMPORT, *PROVIDER, importtime=True)[1])
    result["provider_import"] = {
        "median_s": round(median, 4),
        "runs_s": [round(s, 4) for s in imports],
        "slowest_self_s": culprits,
    }
    rows.append(
        [
            "import the provider (evaljobs + operators, hooks, sensors)",
            median,
            TARGETS["provider"],
            median / TARGETS["provider"],
        ]
    )
    targets.append(
        {
            "name": "import the provider",
            "value": round(median, 3),
            "target": f"< {TARGETS['provider']}",
            "unit": "s",
            "met": median < TARGETS["provider"],
        }
    )

    report_json = OUT / "leaderboard_and_report.json"
    if not report_json.exists():
        subprocess.run([sys.executable, str(REPO / "bench" / "leaderboard_and_report.py")], check=True)
    report = json.loads(report_json.read_text())
    for step in ("leaderboard build", "html render, no bundles", "html render"):
        value, target = report["seconds"][step], TARGETS["html render" if "html" in step else step]
        rows.append(
            [
                f"{step}, {report['models']} x {report['benchmarks']} (leaderboard_and_report.json)",
                value,
                target,
                value / target,
            ]
        )

    header = ["figure (median of fresh processes)", "seconds", "target s", "of target", "met"]
    text = table("Airflow-facing costs", header, [[*r, "yes" if r[1] < r[2] else "NO"] for r in rows])
    print("slowest modules the provider import adds (self time, -X importtime):")
    for name, secs in culprits:
        print(f"  {secs * 1000:7.1f} ms  {name}")
    result |= {"table": text, "targets": targets}
    print(f"written: {write('airflow_parse', result)}")


if __name__ == "__main__":
    main()
