"""The quickstart DAG parses cleanly and, run with `airflow dags test` on SQLite, records a real job."""

import json
import os
import subprocess
import sys
from pathlib import Path

from evaljobs.engine.results import ResultsStore
from tests.conftest import REPO

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def test_dag_parses_with_its_form():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags["evaljobs_quickstart"]
    assert [t.task_id for t in dag.tasks] == ["evaluate"]
    assert set(dag.params) == {"checkpoint", "benchmarks", "limit", "project"}


def test_dag_runs_a_job_end_to_end(model_dir, tmp_path):
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "EVALJOBS_HOME": str(tmp_path / "home"),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    conf = {"checkpoint": str(model_dir), "limit": 3, "project": "dagtest"}
    out = subprocess.run(
        [AIRFLOW, "dags", "test", "evaljobs_quickstart", "-c", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "state=success" in out.stdout + out.stderr
    rows = ResultsStore(tmp_path / "home").rows("dagtest")
    assert sorted(r.benchmark for r in rows) == ["arc_challenge_local", "gsm8k_local", "mmlu_marketing_local"]
    assert {r.n_samples for r in rows} == {3}
