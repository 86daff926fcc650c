"""The quickstart's re-run when every request is in the request cache: with vLLM started anyway (the serve
task told nothing, as before) and with the serve task told its evaluation (``evaluations=["evaluate"]``: the
cache answers, no vLLM starts), side by side in one Airflow home and results home.

A first run fills the request cache; then each variant re-runs with the same settings, ``airflow dags test``
wall time (what a person waits for). Target: the cached re-run takes < 1/2 of the one that starts vLLM.

    .venv/bin/python bench/rerun.py [--limit 10]
Prints a table and writes bench/out/rerun.json.
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

        def run(dag_id: str) -> float:
            started = time.perf_counter()
            done = subprocess.run(
                [AIRFLOW, "dags", "test", dag_id, "-c", conf], env=env, capture_output=True, text=True
            )
            assert done.returncode == 0 and "state=success" in done.stdout, done.stdout[-3000:] + done.stderr[-3000:]
            return time.perf_counter() - started

        first = run("evaljobs_quickstart")
        untold_seconds = run("quickstart_untold")
        told_seconds = run("evaljobs_quickstart")
    ratio = told_seconds / untold_seconds
    table(
        f"quickstart re-run, every request cached (limit {args.limit}; first run {first:.0f} s)",
        ["re-run", "seconds", "vLLM started"],
        [["serve told nothing (before)", untold_seconds, "yes"], ["serve told its evaluation", told_seconds, "no"]],
    )
    print(f"ratio (told / before): {ratio:.2f}")
    write(
        "rerun",
        {
            "limit": args.limit,
            "first_run_seconds": round(first, 1),
            "rerun_seconds": {"vllm_started": round(untold_seconds, 1), "cache_only": round(told_seconds, 1)},
            "targets": [
                {
                    "name": "cached re-run / re-run with vLLM",
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
