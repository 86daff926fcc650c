"""The deferred wait for the shared vLLM server: the operator creates the Deployment + Service and defers to
VLLMServerTrigger, which polls the Deployment through the cncf-kubernetes async hook until a replica is ready
or its deadline passes. The Kubernetes API is an in-memory stand-in served over HTTP (tests/kubernetes/
apiserver.py), so the real sync and async Kubernetes clients, and the hooks, do the talking."""

import asyncio
import json
import threading
import time

import pytest
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.module_loading import import_string

from evaljobs.kubernetes import server as cluster
from evaljobs.operators.serve import VLLMServeOperator
from evaljobs.triggers.server import VLLMServerTrigger
from tests.kubernetes.apiserver import ApiServer

CLUSTER = {"namespace": "evals", "model_volume_claim": "models"}


class DagRun:
    dag_id = "evals"


CONTEXT = {"run_id": "manual__1", "dag_run": DagRun()}
NAME = cluster.server_name("evals", "manual__1", "serve")
URL = f"http://{NAME}.evals.svc.cluster.local:8000/v1"


@pytest.fixture
def api(request, monkeypatch):
    """The stand-in API server (its Deployments ready after ``param`` status reads), the default ``kubernetes``
    connection pointing at it."""
    with ApiServer(ready_after=getattr(request, "param", 0)) as server:
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", server.connection())
        yield server


def serve(**kwargs) -> VLLMServeOperator:
    args = {"task_id": "serve", "checkpoint": "/models/llama-8b", "execution_mode": "kubernetes", "deferrable": True}
    return VLLMServeOperator(**(args | {"kubernetes": CLUSTER, "server_resources": {"gpus": 1}} | kwargs))


def deferred(op: VLLMServeOperator) -> TaskDeferred:
    with pytest.raises(TaskDeferred) as info:
        op.execute(CONTEXT)
    return info.value


def first_event(trigger: VLLMServerTrigger) -> dict:
    async def run():
        async for event in trigger.run():
            return event.payload

    return asyncio.run(asyncio.wait_for(run(), timeout=30))


def created(api: ApiServer) -> set:
    return {(kind, name) for (_ns, kind, name) in api.objects}


@pytest.mark.parametrize("api", [3], indirect=True)
def test_the_trigger_fires_with_the_url_once_a_replica_is_ready(api):
    api.objects[("evals", "deployments", NAME)] = {"metadata": {"name": NAME}}
    trigger = VLLMServerTrigger(NAME, "evals", URL, time.time() + 30, poll_interval=0.01)
    event = first_event(trigger)
    assert event == {"name": NAME, "namespace": "evals", "status": "success", "base_url": URL}
    assert api.status_reads == 4


@pytest.mark.parametrize("api", [None], indirect=True)
def test_the_trigger_gives_up_at_its_deadline(api):
    api.objects[("evals", "deployments", NAME)] = {"metadata": {"name": NAME}}
    started = time.monotonic()
    event = first_event(VLLMServerTrigger(NAME, "evals", URL, time.time() + 0.5, poll_interval=0.1))
    assert event["status"] == "timeout" and event["message"] == "last seen: 0 of 1 replicas ready"
    assert 0.4 < time.monotonic() - started < 5 and api.status_reads >= 3


def test_the_trigger_stops_at_once_when_the_deployment_is_gone(api):
    event = first_event(VLLMServerTrigger(NAME, "evals", URL, time.time() + 30, poll_interval=0.01))
    assert event["status"] == "error" and event["message"] == "reading it answered HTTP 404 Not Found"
    assert api.status_reads == 0 and len(api.calls) == 1


def test_the_operator_creates_the_server_then_defers_with_a_serialisable_trigger(api):
    before = time.time()
    task = deferred(serve())
    assert created(api) == {("deployments", NAME), ("services", NAME)}
    assert api.status_reads == 0  # the worker did not wait
    assert task.method_name == "execute_complete" and isinstance(task.trigger, VLLMServerTrigger)
    classpath, kwargs = task.trigger.serialize()
    assert classpath == "evaljobs.triggers.server.VLLMServerTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs  # plain JSON: what the triggerer table stores
    assert import_string(classpath)(**kwargs).serialize() == (classpath, kwargs)
    timeout = 1800 + 900  # kubernetes.startup_timeout + server_resources.startup_timeout
    assert kwargs | {"deadline": 0} == {
        "name": NAME,
        "namespace": "evals",
        "base_url": URL,
        "deadline": 0,
        "kubernetes_conn_id": "kubernetes_default",
        "poll_interval": 10.0,
    }
    assert before + timeout <= kwargs["deadline"] <= time.time() + timeout  # absolute: survives a restart
    assert not task.kwargs  # execute_complete rebuilds the server's names: `dags test` drops defer kwargs


@pytest.mark.parametrize("api", [2], indirect=True)
def test_on_the_ready_event_the_operator_pushes_the_in_cluster_url(api):
    op = serve(poll_interval=0.01)
    task = deferred(op)
    event = first_event(task.trigger)
    xcom = op.execute_complete(CONTEXT, event=event)
    assert xcom == {
        "base_url": URL,
        "model": "llama-8b",
        "checkpoint": "/models/llama-8b",
        "artifact": None,
        "mode": "kubernetes",
        "name": NAME,
        "namespace": "evals",
        "conn_id": "kubernetes_default",
        "pid": None,
        "log": None,
    }  # the one ServerInfo shape: a local server sets pid and log instead
    assert created(api) == {("deployments", NAME), ("services", NAME)}  # kept for the evaluations


@pytest.mark.parametrize("api", [None], indirect=True)
def test_on_timeout_the_operator_deletes_both_and_says_what_to_check(api):
    op = serve(poll_interval=0.05)
    task = deferred(op)
    task.trigger.deadline = time.time() + 0.3
    event = first_event(task.trigger)
    assert event["status"] == "timeout"
    with pytest.raises(cluster.ServerNotReadyError) as info:
        op.execute_complete(CONTEXT, event=event)
    assert created(api) == set()
    assert [c for c in api.calls if c[0] == "DELETE"] == [("DELETE", "deployments", NAME), ("DELETE", "services", NAME)]
    message = str(info.value)
    assert f"vLLM deployment evals/{NAME} was not ready within 2700 s" in message
    assert f"kubectl describe deployment -n evals {NAME}" in message
    assert "(last seen: 0 of 1 replicas ready)" in message and message.endswith(
        "its deployment and service are deleted"
    )


def test_on_an_error_event_the_operator_deletes_both(api):
    op = serve()
    deferred(op)
    event = {"name": NAME, "namespace": "evals", "status": "error", "message": "reading it answered HTTP 403 Forbidden"}
    with pytest.raises(cluster.ServerNotReadyError, match="could not be awaited: reading it answered HTTP 403"):
        op.execute_complete(CONTEXT, event=event)
    assert created(api) == set()


@pytest.mark.parametrize("api", [1], indirect=True)
def test_the_blocking_wait_still_works(api):
    xcom = serve(deferrable=False, poll_interval=0.01).execute(CONTEXT)
    assert xcom["base_url"] == URL and api.status_reads == 2
    assert created(api) == {("deployments", NAME), ("services", NAME)}


def test_a_bad_poll_interval_is_refused_when_the_dag_is_parsed():
    with pytest.raises(ValueError, match="poll_interval must be a positive number of seconds"):
        serve(poll_interval=0)


DAG = """
from airflow.sdk import dag, task
from evaljobs.operators.serve import VLLMServeOperator, VLLMStopOperator

@dag(dag_id="shared_server", schedule=None)
def shared_server():
    server = VLLMServeOperator(
        task_id="serve", checkpoint="/models/llama-8b", server_resources={"gpus": 1}, poll_interval=0.2,
        execution_mode="kubernetes", kubernetes={"namespace": "evals", "model_volume_claim": "models"},
    )

    @task
    def evaluate(server):
        print("EVALUATE AGAINST", server["base_url"])

    stop = VLLMStopOperator(task_id="stop", server=server.output)
    evaluate(server.output) >> stop.as_teardown(setups=server)

shared_server()
"""


@pytest.mark.parametrize("api", [3], indirect=True)
@pytest.mark.parametrize("deferrable", ["True", "False"])
def test_a_dag_run_waits_for_the_server_pushes_the_url_and_tears_it_down(api, airflow, deferrable):
    """``deferrable`` follows ``[operators] default_deferrable``: the wait runs in the trigger, or on the worker."""
    env = {"AIRFLOW_CONN_KUBERNETES_DEFAULT": api.connection(), "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": deferrable}
    ok, output = airflow.dags_test("shared_server", DAG, **env)
    assert ok, output[-4000:]
    assert ("Pausing task as DEFERRED" in output) == (deferrable == "True")
    assert "EVALUATE AGAINST http://evaljobs-vllm-" in output and ".evals.svc.cluster.local:8000/v1" in output
    methods = [(method, kind) for method, kind, _name in api.calls]
    assert methods[:2] == [("POST", "deployments"), ("POST", "services")]
    assert methods.count(("GET", "deployments")) == 4  # polled (by the trigger, or the worker) until ready
    assert methods[-2:] == [("DELETE", "deployments"), ("DELETE", "services")]  # the teardown
    assert api.objects == {}


def test_a_retry_adopts_the_deployment_and_service_of_its_earlier_try(api):
    first = serve(deferrable=False, poll_interval=0.01).shared_server(CONTEXT)
    api.objects[("evals", "deployments", NAME)] = first.deployment  # created by a try whose worker was lost
    api.objects[("evals", "services", NAME)] = first.service
    xcom = serve(deferrable=False, poll_interval=0.01).execute(CONTEXT)
    assert xcom["base_url"] == URL and created(api) == {("deployments", NAME), ("services", NAME)}
    posts = [(m, k) for m, k, _ in api.calls if m == "POST"]
    assert posts == [("POST", "deployments"), ("POST", "services")]  # both answered 409: adopted, not failed
    assert api.objects[("evals", "deployments", NAME)] is first.deployment  # kept as it was


@pytest.mark.parametrize("api", [None], indirect=True)
def test_on_kill_deletes_the_deployment_and_service(api):
    op, failure = serve(deferrable=False, poll_interval=0.05), []

    def execute():
        try:
            op.execute(CONTEXT)
        except Exception as exc:  # noqa: BLE001 - what the killed wait raises
            failure.append(exc)

    task = threading.Thread(target=execute)
    task.start()
    deadline = time.monotonic() + 30
    while api.status_reads < 2:  # created, and waiting
        assert time.monotonic() < deadline
        time.sleep(0.01)
    op.on_kill()
    task.join(30)
    assert not task.is_alive() and failure and created(api) == set()
    assert ("DELETE", "deployments", NAME) in api.calls and ("DELETE", "services", NAME) in api.calls


@pytest.mark.parametrize("api", [1], indirect=True)
def test_replicas_are_the_deployments_and_the_server_is_ready_with_one(api):
    from tests.kubernetes.manifests import validated

    op = serve(deferrable=False, poll_interval=0.01, replicas=3)
    assert validated(op.shared_server(CONTEXT).deployment)["spec"]["replicas"] == 3
    assert op.execute(CONTEXT)["base_url"] == URL
    assert api.objects[("evals", "deployments", NAME)]["spec"]["replicas"] == 3
    assert api.status_reads == 2


@pytest.mark.parametrize("api", [None], indirect=True)
def test_the_trigger_reports_how_many_replicas_are_ready(api):
    api.objects[("evals", "deployments", NAME)] = serve(replicas=4).shared_server(CONTEXT).deployment
    event = first_event(VLLMServerTrigger(NAME, "evals", URL, time.time() + 0.2, poll_interval=0.05))
    assert event["status"] == "timeout" and event["message"] == "last seen: 0 of 4 replicas ready"


@pytest.mark.parametrize("replicas", [0, 2])
def test_replicas_are_refused_when_the_dag_is_parsed_unless_a_cluster_serves_them(replicas):
    with pytest.raises(ValueError, match="replicas must be a whole number >= 1, above 1 in kubernetes mode only"):
        VLLMServeOperator(task_id="serve", checkpoint="/models/m", replicas=replicas, **({} if replicas else {}))
