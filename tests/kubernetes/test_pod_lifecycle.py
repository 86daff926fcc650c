"""The pod operator's reattach and on_kill, in-process against the API stand-in (which runs the pods here): a
retry after a lost worker follows the pod its first try left running instead of starting another, and killing
the task deletes its pod, which stops the evaluation. The whole task run is in test_task_run.py."""

import threading
import time

import pytest

from evaljobs.operators.pod import WandbEvalPodOperator
from tests.kubernetes.apiserver import ApiServer
from tests.latency_endpoint import MODEL, LatencyEndpoint


class TI:
    dag_id, task_id, map_index = "k8s", "evaluate", 0

    def __init__(self, try_number: int):
        self.try_number, self.pushed = try_number, {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


def context(try_number: int) -> dict:
    return {"ti": TI(try_number), "run_id": "manual__1", "dag": object()}


@pytest.fixture
def api(tmp_path, monkeypatch):
    with ApiServer(kubelet=tmp_path / "kubelet") as server:
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", server.connection())
        yield server


def operator(endpoint, limit=3, deferrable=False) -> WandbEvalPodOperator:
    return WandbEvalPodOperator(
        task_id="evaluate",
        base_url=endpoint.base_url,
        model=MODEL,
        benchmarks="gsm8k_local",
        project="k8s",
        settings={"limit": limit, "max_tokens": 16},
        wandb_mode="disabled",
        publish_leaderboard=False,
        deferrable=deferrable,
        kubernetes={"namespace": "evals"},
    )


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def left_running(endpoint):
    """The pod a first try created before its worker was lost."""
    first, try1 = operator(endpoint), context(1)
    first.prepare_pod(try1)
    first.name = first._set_name(first.name)
    return first.get_or_create_pod(first.build_pod_request_obj(try1), try1)


def test_a_retry_reattaches_to_the_pod_its_first_try_left_running(api):
    with LatencyEndpoint(0.01, 16) as endpoint:
        created = left_running(endpoint)
        second, try2 = operator(endpoint), context(2)
        summary = second.execute(try2)
    assert [(m, k) for m, k, _ in api.calls].count(("POST", "pods")) == 1  # no second pod
    assert second.pod.metadata.name == created.metadata.name == try2["ti"].pushed["pod_name"]
    assert second.pod.metadata.labels["try_number"] == "1"  # the first try's pod
    assert list(summary["scores"]) == ["gsm8k_local"] and api.objects == {}


def test_a_deferrable_retry_of_a_pod_that_has_ended_returns_its_summary_without_deferring(api):
    with LatencyEndpoint(0.01, 16) as endpoint:
        created = left_running(endpoint)
        run = api.runs[created.metadata.name]
        assert run.done.wait(60) and run.exit_code == 0  # the evaluation ended; its XCom sidecar waits
        summary = operator(endpoint, deferrable=True).execute(context(2))  # no TaskDeferred: nothing to wait for
    assert list(summary["scores"]) == ["gsm8k_local"] and api.objects == {}
    assert [(m, k) for m, k, _ in api.calls].count(("POST", "pods")) == 1


def test_on_kill_deletes_the_pod_and_so_stops_the_evaluation(api):
    with LatencyEndpoint(0.5, 1) as endpoint:
        op, failure = operator(endpoint, limit=10), []

        def execute():
            try:
                op.execute(context(1))
            except Exception as exc:  # noqa: BLE001 - the killed task's end, whatever KPO raises
                failure.append(exc)

        task = threading.Thread(target=execute)
        task.start()
        wait_for(lambda: any("progress gsm8k_local: " in line for run in api.runs.values() for *_, line in run.lines))
        op.on_kill()
        task.join(60)
    [(name, run)] = api.runs.items()
    assert not task.is_alive() and failure  # the task ends, failed
    assert ("DELETE", "pods", name) in api.calls and api.pods() == {}
    assert run.exit_code == 137  # its container was killed, mid-benchmark
    assert not any("progress gsm8k_local: 10/10" in line for *_, line in run.lines)
