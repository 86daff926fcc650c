"""Run DAGs with the real `airflow dags test` on SQLite, each test with its own Airflow home (fixtures)."""

import os
import shutil
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

    def dags_test(self, dag_id: str, source: str | None = None, conf: str | None = None, **env: str):
        """`airflow dags test DAG_ID` (after writing ``source`` as the DAG file); returns (ok, output)."""
        if source is not None:
            (self.dags / f"{dag_id}.py").write_text(source)
        command = [AIRFLOW, "dags", "test", dag_id] + (["-c", conf] if conf else [])
        out = subprocess.run(command, env=self.env | env, capture_output=True, text=True, timeout=600)
        output = out.stdout + out.stderr
        return out.returncode == 0 and "state=success" in output, output


@pytest.fixture
def airflow(tmp_path, migrated_db) -> Airflow:
    return Airflow(tmp_path, migrated_db)
