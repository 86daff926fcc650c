"""The quickstart's re-run when every request is in the request cache: with vLLM started anyway (the serve
task told nothing, as before) and with the serve task told its evaluation (``evaluations=["evaluate"]``: the
cache answers, no vLLM starts), side by side in one Airflow home and results home.

A first run fills the request cache; then each variant re-runs with the same settings: ``airflow dags test``
wall time (what a person waits for, Airflow's own start-up included) and each task's duration from the
metadata DB. Target: serve + evaluate + stop, what the change touches (publishing does the same work either
way), take < 1/2 of their time when vLLM starts.

    .venv/bin/python bench/rerun.py [--limit 10]
Prints a table and writes bench/out/rerun.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, table, write

AIRFLOW = str(Path(sys.executable).parent / "airflow")
TOLD = ', evaluations=["evaluate"]'


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=10, help="examples per benchmark")
    args = parser.parse_args()
    model = Path(os.environ["EVALJOBS_HOME"]) / "models" / "smollm2-135m-instruct"
    with tempfile.TemporaryDirectory(prefix="bench-rerun-") as tmp:
        root = Path(tmp)
        (root / "dags").mkdir()
        source = (REPO / "dags" / "evaljobs_quickstart.py").read_text()
        assert TOLD in source, "the quickstart's serve task no longer names its evaluation"
        (root / "dags" / "evaljobs_quickstart.py").write_text(source)
        untold = source.replace(TOLD, "").replace('dag_id="evaljobs_quickstart"', 'dag_id="quickstart_untold"')
        (root / "dags" / "quickstart_untold.py").write_text(untold)
        env = os.environ | {
            "AIRFLOW_HOME": str(root / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "EVALJOBS_HOME": str(root / "home"),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
        subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
        conf = json.dumps({"checkpoint": str(model), "limit": args.limit, "project": "bench", "wandb_mode": "offline"})

        def run(dag_id: str) -> dict[str, float]:
            """Wall seconds of ``airflow dags test`` and each task's duration in that run."""
            started = time.perf_counter()
            done = subprocess.run(
                [AIRFLOW, "dags", "test", dag_id, "-c", conf], env=env, capture_output=True, text=True
            )
            wall = time.perf_counter() - started
            assert done.returncode == 0 and "state=success" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
            with sqlite3.connect(root / "airflow" / "airflow.db") as db:
                query = "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1"
                [run_id] = db.execute(query, (dag_id,)).fetchone()
                tasks = db.execute("SELECT task_id, duration FROM task_instance WHERE run_id = ?", (run_id,))
                return {"dags test": wall, **dict(tasks.fetchall())}

        first = run("evaljobs_quickstart")
        before = run("quickstart_untold")
        after = run("evaljobs_quickstart")
    columns = ["dags test", "serve", "evaluate", "publish", "stop"]
    touched = [sum(t[k] for k in ("serve", "evaluate", "stop")) for t in (before, after)]
    ratio = touched[1] / touched[0]
    table(
        f"quickstart re-run, every request cached (limit {args.limit}; first run {first['dags test']:.0f} s), s",
        ["re-run", *columns, "vLLM started"],
        [
            ["serve told nothing (before)", *(before[k] for k in columns), "yes"],
            ["serve told its evaluation", *(after[k] for k in columns), "no"],
        ],
    )
    print(f"serve + evaluate + stop: {touched[0]:.1f} s -> {touched[1]:.1f} s, ratio {ratio:.2f}")
    write(
        "rerun",
        {
            "limit": args.limit,
            "first_run": {k: round(v, 1) for k, v in first.items()},
            "rerun_vllm_started": {k: round(v, 1) for k, v in before.items()},
            "rerun_cache_only": {k: round(v, 1) for k, v in after.items()},
            "targets": [
                {
                    "name": "serve + evaluate + stop, cached re-run / re-run with vLLM",
                    "value": round(ratio, 2),
                    "target": "< 0.5",
                    "unit": "x",
                    "met": ratio < 0.5,
                }
            ],
        },
    )


if __name__ == "__main__":
    main()
