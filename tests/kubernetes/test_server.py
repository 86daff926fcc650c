"""The shared vLLM server: a Deployment + Service valid for Kubernetes 1.33, awaited with a deadline (here the
blocking wait, ``deferrable=False``; the deferred one is in test_server_wait.py), and deleted by the teardown even
when one of the two is already gone. The Kubernetes API is the one part that cannot run here: a small in-memory
stand-in records the calls."""

import json

import pytest
from kubernetes.client.exceptions import ApiException

from evaljobs.kubernetes import server as cluster
from evaljobs.kubernetes.model import ModelPlacementError
from evaljobs.operators.serve import VLLMServeOperator, VLLMStopOperator, server_info
from tests.kubernetes.manifests import validated

CLUSTER = {
    "namespace": "evals",
    "model_volume_claim": "models",
    "secrets": {"WANDB_API_KEY": "evaljobs-secrets"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}


class DagRun:
    dag_id = "evals"


CONTEXT = {"run_id": "manual__1", "dag_run": DagRun()}


def serve(**kwargs) -> VLLMServeOperator:
    args = {"task_id": "serve", "execution_mode": "kubernetes", "kubernetes": CLUSTER, "server_resources": {"gpus": 2}}
    return VLLMServeOperator(**(args | kwargs))


def test_deployment_and_service_are_valid_and_serve_on_the_gpus():
    server = serve(checkpoint="/models/llama-8b").shared_server(CONTEXT)
    deployment, service = validated(server.deployment), validated(server.service)
    assert server.name == cluster.server_name("evals", "manual__1", "serve") and server.name.startswith(
        "evaljobs-vllm-"
    )
    assert server.base_url == f"http://{server.name}.evals.svc.cluster.local:8000/v1"
    pod = deployment["spec"]["template"]["spec"]
    [vllm] = pod["containers"]
    assert vllm["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert vllm["command"][vllm["command"].index("--host") + 1] == "0.0.0.0"
    assert vllm["command"][vllm["command"].index("--tensor-parallel-size") + 1] == "2"
    assert vllm["readinessProbe"]["httpGet"] == {"path": "/health", "port": 8000} and "restartPolicy" not in vllm
    assert pod["tolerations"] == CLUSTER["tolerations"]
    assert {v["name"] for v in pod["volumes"]} == {"model", "dshm"}
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http"}]


def test_an_artifact_is_fetched_with_the_key_by_reference(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WANDB_DEFAULT", json.dumps({"conn_type": "wandb", "password": "canary-x"}))
    server = serve(checkpoint="team/models/llama-8b:prod").shared_server(CONTEXT)
    [fetch] = validated(server.deployment)["spec"]["template"]["spec"]["initContainers"]
    assert fetch["env"] == [
        {"name": "WANDB_API_KEY", "valueFrom": {"secretKeyRef": {"name": "evaljobs-secrets", "key": "WANDB_API_KEY"}}}
    ]
    assert server.model == "llama-8b:prod" and server.model_path == "/models/llama-8b-prod"
    assert "canary-x" not in json.dumps([server.deployment, server.service])


def test_a_server_without_gpus_is_refused():
    with pytest.raises(ModelPlacementError, match="server_resources.gpus must be 1 or 2"):
        serve(checkpoint="/models/m", server_resources={"gpus": 0}).shared_server(CONTEXT)


class Status:
    def __init__(self, ready):
        self.status = type("S", (), {"ready_replicas": ready})()


class FakeApi:
    """AppsV1Api + CoreV1Api as far as the server needs them, recording each call."""

    def __init__(self, ready_after=None, missing=()):
        self.calls, self.polls, self.ready_after, self.missing = [], 0, ready_after, set(missing)

    def __getattr__(self, method):
        def call(name_or_namespace, *args):
            self.calls.append((method, name_or_namespace))
            if method.startswith("delete") and method.split("_")[-1] in self.missing:
                raise ApiException(status=404, reason="Not Found")

        return call

    def read_namespaced_deployment_status(self, name, namespace):
        self.polls += 1
        return Status(1 if self.ready_after is not None and self.polls > self.ready_after else None)


def test_wait_returns_once_a_replica_is_ready():
    server = serve(checkpoint="/models/m").shared_server(CONTEXT)
    api = FakeApi(ready_after=3)
    cluster.wait_ready(server, api, timeout=60, sleep=lambda s: None)
    assert api.polls == 4


def test_wait_gives_up_at_the_deadline_with_what_to_check():
    server = serve(checkpoint="/models/m").shared_server(CONTEXT)
    with pytest.raises(cluster.ServerNotReadyError) as info:
        cluster.wait_ready(server, FakeApi(), timeout=0.2, poll=0.05)
    assert f"kubectl describe deployment -n evals {server.name}" in str(info.value)


def test_teardown_deletes_both_even_when_one_is_gone(monkeypatch):
    api = FakeApi(missing=["deployment"])
    monkeypatch.setattr("evaljobs.operators.serve._clients", lambda conn_id: (api, api))
    xcom = server_info("kubernetes", base_url="http://x/v1", name="evaljobs-vllm-1", namespace="evals", conn_id="k")
    VLLMStopOperator(task_id="stop", server=xcom).execute({})
    assert api.calls == [
        ("delete_namespaced_deployment", "evaljobs-vllm-1"),
        ("delete_namespaced_service", "evaljobs-vllm-1"),
    ]


def test_blocking_setup_deletes_what_it_created_when_the_server_never_gets_ready(monkeypatch):
    api = FakeApi()
    monkeypatch.setattr("evaljobs.operators.serve._clients", lambda conn_id: (api, api))
    op = serve(checkpoint="/models/m", kubernetes=CLUSTER | {"startup_timeout": 30}, deferrable=False)
    monkeypatch.setattr(cluster, "wait_ready", lambda *a: (_ for _ in ()).throw(cluster.ServerNotReadyError("late")))
    with pytest.raises(cluster.ServerNotReadyError):
        op.execute(CONTEXT)
    assert [c[0] for c in api.calls] == [
        "create_namespaced_deployment",
        "create_namespaced_service",
        "delete_namespaced_deployment",
        "delete_namespaced_service",
    ]


def test_blocking_setup_pushes_the_in_cluster_url_that_evaluation_pods_use(monkeypatch):
    from evaljobs.operators.evaluate import WandbEvalOperator
    from tests.kubernetes.manifests import job_spec_of, pod_manifest

    api = FakeApi(ready_after=0)
    monkeypatch.setattr("evaljobs.operators.serve._clients", lambda conn_id: (api, api))
    xcom = serve(checkpoint="/models/llama-8b", deferrable=False).execute(CONTEXT)
    name = cluster.server_name("evals", "manual__1", "serve")
    assert xcom == {
        "base_url": f"http://{name}.evals.svc.cluster.local:8000/v1",
        "model": "llama-8b",
        "checkpoint": "/models/llama-8b",
        "artifact": None,
        "mode": "kubernetes",
        "name": name,
        "namespace": "evals",
        "conn_id": "kubernetes_default",
        "pid": None,
        "log": None,
    }  # the one ServerInfo shape: a local server sets pid and log instead
    evaluation = WandbEvalOperator(
        task_id="evaluate", server=xcom, benchmarks="gsm8k", execution_mode="kubernetes", kubernetes=CLUSTER
    )
    manifest = pod_manifest(evaluation)
    assert job_spec_of(manifest)["model"] == {
        "api": "chat",
        "checkpoint": "/models/llama-8b",
        "endpoint": xcom["base_url"],
        "model": "llama-8b",
    }
