"""The pod operator's whole lifecycle in real `airflow dags test` runs, against the API stand-in, which runs each
created pod's evaluation container here (tests/kubernetes/apiserver.py): KubernetesPodOperator creates the pod,
waits for it (on the worker, or deferred to its trigger), follows its log into the task log, reads the summary
through the XCom sidecar's exec, and deletes the pod. The model is hosted: the latency endpoint, its key a
Kubernetes Secret reference. Assertions are on the XCom's scores, the API calls, the pods' phases and the log."""

import json
import sqlite3
import threading
import time

import pytest

from evaljobs.engine.results import ResultsStore
from tests.kubernetes.apiserver import ApiServer
from tests.latency_endpoint import MODEL, LatencyEndpoint

KEY = "canary-pod-key-0b9e"  # in the stand-in's Secret only

DAG = """
from airflow.sdk import dag
from evaljobs.operators.evaluate import WandbEvalOperator

@dag(dag_id="k8s", schedule=None)
def k8s():
    WandbEvalOperator.partial(
        task_id="evaluate", base_url={base_url!r}, model={model!r}, api_key_secret="TEAM_LLM_KEY",
        project="k8s", settings={{"limit": {limit}, "max_tokens": 16, "concurrency": 4}}, wandb_mode="disabled",
        poll_interval=0.5, retries={retries}, retry_delay=0,
        execution_mode="kubernetes",
        kubernetes={{"namespace": "evals", "secrets": {{"TEAM_LLM_KEY": "llm-keys/team"}}}},
    ).expand(benchmarks=["gsm8k_local"])

k8s()
"""


@pytest.fixture(scope="module")
def endpoint():
    with LatencyEndpoint(0.01, 16) as server:
        yield server


@pytest.fixture
def api(tmp_path, monkeypatch):
    with ApiServer(kubelet=tmp_path / "kubelet") as server:
        server.secrets[("evals", "llm-keys")] = {"team": KEY}
        yield server


def run(airflow, api, endpoint, limit=3, retries=0, **env):
    source = DAG.format(base_url=endpoint.base_url, model=MODEL, limit=limit, retries=retries)
    return airflow.dags_test("k8s", source, AIRFLOW_CONN_KUBERNETES_DEFAULT=api.connection(), **env)


def returned(airflow) -> list[dict]:
    with sqlite3.connect(airflow.home / "airflow.db") as db:
        rows = db.execute("SELECT key, value FROM xcom WHERE task_id = 'evaluate' ORDER BY key").fetchall()
    return {key: json.loads(value) for key, value in rows}


def leaderboard_events(airflow) -> list[tuple[str, dict]]:
    with sqlite3.connect(airflow.home / "airflow.db") as db:
        query = "SELECT a.uri, e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id"
        return [(uri, json.loads(extra)) for uri, extra in db.execute(query)]


def pod_calls(api) -> list[tuple[str, str]]:
    return [(method, kind) for method, kind, _name in api.calls if kind.startswith("pods")]


def test_sync_the_pod_runs_as_the_task_and_its_summary_is_the_xcom(airflow, api, endpoint):
    ok, output = run(airflow, api, endpoint)
    assert ok, output[-5000:]
    [name] = api.runs
    xcom = returned(airflow)
    summary = xcom["return_value"]
    assert (xcom["pod_name"], xcom["pod_namespace"]) == (name, "evals")
    assert summary["model"] == MODEL and list(summary["scores"]) == ["gsm8k_local"]
    assert 0.0 <= summary["scores"]["gsm8k_local"] <= 1.0
    assert api.runs[name].exit_code == 0 and api.objects == {}  # deleted when done
    assert api.phases[name][-1] == "Succeeded" and "Running" in api.phases[name]
    calls = pod_calls(api)
    assert calls[0] == ("GET", "pods")  # reattach: a pod of this task instance left running? none
    assert calls[1] == ("POST", "pods") and ("GET", "pods/log") in calls
    assert calls.count(("GET", "pods/exec")) == 2 and calls[-1] == ("DELETE", "pods")  # XCom read, sidecar kill
    [row] = ResultsStore(api.kubelet / name / "var/lib/evaljobs").rows("k8s")  # the pod's results home
    assert (row.benchmark, row.n_samples, row.score) == ("gsm8k_local", 3, summary["scores"]["gsm8k_local"])
    # The evaluation's output is the task's log, line by line as it ran (followed, not read at the end).
    progress = [line for line in output.splitlines() if "[base]     progress gsm8k_local:" in line]
    assert len(progress) == 3 and "3/3 requests (100 %)" in progress[-1], output[-3000:]
    [(uri, extra)] = leaderboard_events(airflow)  # the job published: the task emits the Asset event
    assert uri == "evaljobs://leaderboards/k8s" and extra["scores"] == summary["scores"]
    assert KEY not in output and KEY not in json.dumps(xcom)


def test_deferrable_the_task_waits_in_the_trigger_and_resumes_with_the_summary(airflow, api, endpoint):
    ok, output = run(airflow, api, endpoint, AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE="True")
    assert ok, output[-5000:]
    [name] = api.runs
    summary = returned(airflow)["return_value"]
    assert list(summary["scores"]) == ["gsm8k_local"] and api.runs[name].exit_code == 0
    assert "Checking pod 'evaljobs-gsm8k-local-" in output  # KubernetesPodTrigger, run in-process by dags test
    assert "Pausing task as DEFERRED" in output and "[DAG TEST] running trigger in line" in output, output[-5000:]
    assert output.index("[DAG TEST] Trigger completed") < output.index("[base] logs:")
    # Resumed in trigger_reentry: the whole log read once, the XCom through the sidecar, the pod deleted.
    progress = [line for line in output.splitlines() if "[base] logs:     progress gsm8k_local:" in line]
    assert len(progress) == 3, output[-5000:]
    calls = pod_calls(api)
    assert calls.count(("POST", "pods")) == 1 and calls.count(("GET", "pods/log")) == 1
    assert calls.count(("GET", "pods/exec")) == 2 and calls[-1] == ("DELETE", "pods") and api.objects == {}
    [(uri, extra)] = leaderboard_events(airflow)
    assert uri == "evaljobs://leaderboards/k8s" and extra["scores"] == summary["scores"]


def test_a_pod_killed_mid_run_fails_its_try_and_the_retry_runs_a_new_pod(airflow, api):
    with LatencyEndpoint(0.4, 1) as slow:  # 4 requests, one at a time: the kill lands between answers

        def kill_after_the_first_answer():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                for name, pod in list(api.runs.items()):
                    if any("progress gsm8k_local: " in line for _t, _s, line in pod.lines):
                        return api.kill(name)
                time.sleep(0.05)

        killer = threading.Thread(target=kill_after_the_first_answer)
        killer.start()
        ok, output = run(airflow, api, slow, limit=4, retries=1)
        killer.join()
    assert ok, output[-5000:]
    first, second = api.runs.values()
    labels = [pod.manifest["metadata"]["labels"]["try_number"] for pod in (first, second)]
    assert labels == ["1", "2"] and first.exit_code == 137 and second.exit_code == 0
    assert api.phases[first.manifest["metadata"]["name"]][-1] == "Failed"
    assert f"Pod {first.manifest['metadata']['name']} returned a failure" in output
    # The retry's pod starts with a fresh emptyDir: its request cache is empty, so it sends all 4 requests.
    assert any("requests to send (the others are in the cache): gsm8k_local 4" in line for *_, line in second.lines)
    summary = returned(airflow)["return_value"]
    assert list(summary["scores"]) == ["gsm8k_local"] and api.objects == {}
