"""Run DAGs with the real `airflow dags test` on SQLite, each test with its own Airflow home (fixtures), and
sweep what a run left behind for secrets."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

AIRFLOW = str(Path(sys.executable).parent / "airflow")


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory) -> Path:
    """An Airflow metadata DB migrated once; each test gets a copy."""
    home = tmp_path_factory.mktemp("airflow-template")
    env = {**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    return home / "airflow.db"


class Airflow:
    def __init__(self, tmp_path: Path, migrated_db: Path):
        self.home, self.dags = tmp_path / "airflow", tmp_path / "dags"
        self.dags.mkdir(parents=True)
        self.home.mkdir()
        shutil.copy(migrated_db, self.home / "airflow.db")
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }

    def start(self, dag_id: str, source: str | None = None, conf: str | None = None, **env: str) -> subprocess.Popen:
        """Start `airflow dags test DAG_ID` (after writing ``source`` as the DAG file); output merged, as text."""
        if source is not None:
            (self.dags / f"{dag_id}.py").write_text(source)
        command = [AIRFLOW, "dags", "test", dag_id] + (["-c", conf] if conf else [])
        return subprocess.Popen(
            command, env=self.env | env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def dags_test(self, dag_id: str, source: str | None = None, conf: str | None = None, **env: str):
        """`airflow dags test DAG_ID` to its end; returns (ok, output)."""
        run = self.start(dag_id, source, conf, **env)
        try:
            output = run.communicate(timeout=600)[0]
        finally:
            run.kill()
        return run.returncode == 0 and "state=success" in output, output

    def stored(self) -> dict[str, list[str]]:
        """The XCom values and rendered template fields (with pod YAML) of the runs, from the metadata DB."""
        with sqlite3.connect(self.home / "airflow.db") as db:
            xcom = [str(value) for (value,) in db.execute("SELECT value FROM xcom")]
            rendered = [
                f"{fields} {pod or ''}"
                for fields, pod in db.execute("SELECT rendered_fields, k8s_pod_yaml FROM rendered_task_instance_fields")
            ]
        return {"xcom": xcom, "rendered_task_instance_fields": rendered}


@pytest.fixture
def airflow(tmp_path, migrated_db) -> Airflow:
    return Airflow(tmp_path, migrated_db)


def secret_env(canaries: dict[str, str], wandb_connection: bool = True) -> dict[str, str]:
    """``canaries`` (secret name -> value) as a deployment provides them: each team secret as an Airflow Variable
    and in the worker's environment, the W&B key as the password of the ``wandb_default`` connection (only
    where the run logs offline: with a key, W&B mode ``auto`` goes online, and there is no network here)."""
    team = {name: value for name, value in canaries.items() if name != "WANDB_API_KEY"}
    env = team | {f"AIRFLOW_VAR_{name}": value for name, value in team.items()}
    if wandb_connection:
        env["AIRFLOW_CONN_WANDB_DEFAULT"] = json.dumps({"conn_type": "wandb", "password": canaries["WANDB_API_KEY"]})
    return env


def canary_hits(canaries: dict[str, str], texts: dict[str, str | list[str]], *roots: Path) -> list[str]:
    """Where a canary value shows: in ``texts`` (output, DB values, ...) or any file under ``roots``."""
    hits = []
    for name, value in canaries.items():
        for where, text in texts.items():
            if any(value in t for t in ([text] if isinstance(text, str) else text)):
                hits.append(f"{name} in {where}")
        for root in roots:
            hits += [f"{name} in {p}" for p in root.rglob("*") if p.is_file() and value.encode() in p.read_bytes()]
    return hits
