"""Through the real scheduler: `airflow standalone` (SQLite, LocalExecutor, triggerer), driven by its REST
API as the UI form would: a hosted evaluation with a team secret, and the training hand-off (Asset event →
checkpoint evaluation → promotion gated by LeaderboardSensor)."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from evaljobs.engine.results import ResultsStore
from evaljobs.engine.serving import free_port, group_alive, stop_group
from tests import factories
from tests.conftest import REPO


class Standalone:
    def __init__(self, root: Path, env: dict[str, str]):
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.home, self.results = root / "airflow", root / "results"
        dags = root / "dags"
        shutil.copytree(REPO / "dags", dags)
        self.env = {
            **os.environ,
            **env,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "EVALJOBS_HOME": str(self.results),
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
        self.log = (root / "standalone.log").open("wb")
        self.process = subprocess.Popen(
            [str(Path(sys.executable).parent / "airflow"), "standalone"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def wait_for(self, check, seconds: float, what: str):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"airflow standalone exited; see {self.log.name}"
            try:
                if result := check():
                    return result
            except httpx.HTTPError:
                pass
            time.sleep(2)
        raise AssertionError(f"timed out waiting for {what}; see {self.log.name}")

    def dag_ready(self, dag_id: str) -> bool:
        return self.client.get(f"/api/v2/dags/{dag_id}").status_code == 200

    def trigger(self, dag_id: str, conf: dict) -> str:
        self.wait_for(lambda: self.dag_ready(dag_id), 180, f"{dag_id} to be parsed")
        response = self.client.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        assert response.status_code == 200, response.text
        return response.json()["dag_run_id"]

    def finished_runs(self, dag_id: str) -> list[dict]:
        runs = self.client.get(f"/api/v2/dags/{dag_id}/dagRuns").json()["dag_runs"]
        return [r for r in runs if r["state"] in ("success", "failed")]

    def wait_run(self, dag_id: str, seconds: float = 900) -> dict:
        return self.wait_for(lambda: (self.finished_runs(dag_id) or [None])[0], seconds, f"a finished {dag_id} run")

    def stop(self):
        """Stop every process of the group (scheduler, API server, triggerer, task runners)."""
        stop_group(self.process.pid, grace=60)
        self.process.wait(10)
        self.log.close()


@pytest.fixture
def standalone(tmp_path, api_key, data_root):
    server = Standalone(tmp_path, {"AIRFLOW_VAR_TEAM_LLM_KEY": api_key, "EVALJOBS_DATA_ROOT": str(data_root)})
    server.wait_for(lambda: server.client.get("/api/v2/monitor/health").status_code == 200, 240, "the API server")
    yield server
    server.stop()
    assert not group_alive(server.process.pid)


def test_scheduler_runs_the_form_and_the_training_hand_off(standalone, vllm_server, api_key, model_dir):
    hosted = factories.hosted_form(vllm_server.base_url)
    standalone.trigger("evaljobs_hosted", hosted)
    assert standalone.wait_run("evaljobs_hosted")["state"] == "success"
    [row] = ResultsStore(standalone.results).rows("hosted")
    assert (row.model, row.n_samples) == ("smollm2", 2)

    standalone.trigger("example_training", {"checkpoint": str(model_dir)})
    assert standalone.wait_run("example_training")["state"] == "success"
    checkpoint_run = standalone.wait_run("evaljobs_checkpoint")  # scheduled by the Asset event
    assert checkpoint_run["state"] == "success" and checkpoint_run["run_type"] == "asset_triggered"
    assert standalone.wait_run("evaljobs_promote")["state"] == "success"
    [promotion] = [json.loads(line) for line in (standalone.results / "promotions.jsonl").read_text().splitlines()]
    assert promotion["model"] == "smollm2-135m-instruct" and promotion["project"] == "checkpoints"

    logs = [p for p in (standalone.home / "logs").rglob("*") if p.is_file()]
    assert any("evaljobs_hosted" in str(p) for p in logs)  # real task log files were written ...
    database = list(standalone.home.glob("airflow.db*"))  # XComs and rendered template fields live here
    assert database
    for path in logs + database:  # ... and the canary key is in none of them
        assert api_key.encode() not in path.read_bytes(), path
