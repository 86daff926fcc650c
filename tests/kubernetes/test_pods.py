"""The evaluation pod for each model source, as KubernetesPodOperator builds it, valid for Kubernetes 1.33."""

import json

import pytest

from evaljobs.operators.evaluate import WandbEvalOperator
from tests.kubernetes.manifests import containers, job_spec_of, pod_manifest, volumes

COMMAND = ["python3", "-m", "evaljobs.cli", "run", "--spec", "/etc/evaljobs/spec.json"]
COMMAND += ["--summary-out", "/airflow/xcom/return.json"]
CLUSTER = {
    "namespace": "evals",
    "service_account": "evaljobs",
    "priority_class": "batch-gpu",
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["gpu"]}]}]
            }
        }
    },
    "model_volume_claim": "models",
    "secrets": {"WANDB_API_KEY": "evaljobs-secrets", "TEAM_LLM_KEY": "llm-keys/team"},
}
CANARY = "canary-0123456789abcdef"


@pytest.fixture(autouse=True)
def _team_secrets(monkeypatch):
    """A W&B connection and a team secret holding the canary: no pod may carry it."""
    conn = {"conn_type": "wandb", "password": CANARY, "host": "https://wandb.example.com", "extra": {"entity": "t"}}
    monkeypatch.setenv("AIRFLOW_CONN_WANDB_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("AIRFLOW_VAR_TEAM_LLM_KEY", CANARY)


def operator(**kwargs) -> WandbEvalOperator:
    args = {"task_id": "evaluate", "benchmarks": "gsm8k", "execution_mode": "kubernetes", "kubernetes": CLUSTER}
    return WandbEvalOperator(**(args | kwargs))


def env_of(container: dict) -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env") or []}


@pytest.mark.parametrize("gpus", [1, 2])
def test_checkpoint_pod_serves_vllm_as_a_native_sidecar(gpus):
    manifest = pod_manifest(operator(checkpoint="/models/llama-8b", server_resources={"gpus": gpus}))
    spec = manifest["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["vllm"]
    vllm = spec["initContainers"][0]
    assert vllm["restartPolicy"] == "Always"
    assert vllm["startupProbe"] == {
        "httpGet": {"path": "/health", "port": 8000},
        "periodSeconds": 10,
        "failureThreshold": 90,
    }
    assert vllm["resources"] == {"limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"nvidia.com/gpu": str(gpus)}}
    command = vllm["command"]
    assert command[:3] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--model") + 1] == "/models/llama-8b"
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert ("--tensor-parallel-size" in command) is (gpus == 2)
    if gpus == 2:
        assert command[command.index("--tensor-parallel-size") + 1] == "2"
    assert {m["mountPath"]: m.get("readOnly", False) for m in vllm["volumeMounts"]} == {
        "/models": True,
        "/dev/shm": False,
    }
    assert volumes(manifest)["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": f"{8 * gpus}Gi"}
    assert volumes(manifest)["model"]["persistentVolumeClaim"] == {"claimName": "models", "readOnly": True}

    evaluation = containers(manifest)["base"]
    assert evaluation["command"] == COMMAND and "resources" not in evaluation  # no GPU: vLLM holds them
    assert list(containers(manifest)) == ["base", "airflow-xcom-sidecar"]
    assert {m["mountPath"] for m in evaluation["volumeMounts"]} == {
        "/airflow/xcom",
        "/etc/evaljobs",
        "/var/lib/evaljobs",
        "/models",
    }
    assert job_spec_of(manifest)["model"] == {
        "api": "chat",
        "checkpoint": "/models/llama-8b",
        "endpoint": "http://127.0.0.1:8000/v1",
        "model": "llama-8b",
    }
    assert job_spec_of(manifest)["resources"]["max_model_gb"] == 86.0  # the pod's preflight: the same limit
    assert volumes(manifest)["spec"]["downwardAPI"]["items"] == [
        {"path": "spec.json", "fieldRef": {"fieldPath": "metadata.annotations['evaljobs.io/spec']"}}
    ]


def test_placement_identity_and_logs():
    manifest = pod_manifest(operator(checkpoint="/models/llama-8b", server_resources={"gpus": 1}))
    meta, spec = manifest["metadata"], manifest["spec"]
    assert meta["namespace"] == "evals" and meta["name"].startswith("evaljobs-gsm8k-")
    assert meta["labels"]["evaljobs.io/benchmark"] == "gsm8k"
    assert meta["labels"]["evaljobs.io/job"] == "manual__2026-11-26T10_00_00_00_00-evaluate-0"
    assert meta["labels"]["evaljobs.io/job"] == job_spec_of(manifest)["job_id"]
    assert spec["serviceAccountName"] == "evaljobs" and spec["priorityClassName"] == "batch-gpu"
    assert spec["nodeSelector"] == CLUSTER["node_selector"]
    assert spec["tolerations"] == CLUSTER["tolerations"]
    assert spec["affinity"] == CLUSTER["affinity"]
    assert spec["restartPolicy"] == "Never"


def test_wandb_key_is_a_secret_reference_and_host_a_plain_value():
    manifest = pod_manifest(operator(checkpoint="/models/llama-8b", server_resources={"gpus": 1}))
    env = env_of(containers(manifest)["base"])
    assert env["WANDB_API_KEY"] == {"secretKeyRef": {"name": "evaljobs-secrets", "key": "WANDB_API_KEY"}}
    assert env["WANDB_BASE_URL"] == "https://wandb.example.com" and env["WANDB_ENTITY"] == "t"
    assert env["EVALJOBS_HOME"] == "/var/lib/evaljobs"
    assert CANARY not in json.dumps(manifest)


def test_artifact_is_fetched_by_an_init_container_before_vllm_starts():
    manifest = pod_manifest(operator(checkpoint="team/models/llama-8b:prod", server_resources={"gpus": 1}))
    fetch, vllm = manifest["spec"]["initContainers"]
    assert (fetch["name"], vllm["name"]) == ("fetch-model", "vllm")
    assert "restartPolicy" not in fetch  # a regular init container: runs to completion first
    assert fetch["command"] == [
        "python3", "-m", "evaljobs.cli", "fetch-model", "team/models/llama-8b:prod", "--link", "/models/llama-8b-prod"
    ]  # fmt: skip
    assert env_of(fetch)["WANDB_API_KEY"] == {"secretKeyRef": {"name": "evaljobs-secrets", "key": "WANDB_API_KEY"}}
    assert volumes(manifest)["model"] == {"name": "model", "emptyDir": {}}
    assert vllm["command"][vllm["command"].index("--model") + 1] == "/models/llama-8b-prod"
    # The pod's job keeps the reference (its row and lineage name the version) and serves the fetched folder.
    assert job_spec_of(manifest)["model"] == {
        "api": "chat",
        "checkpoint": "team/models/llama-8b:prod",
        "folder": "/models/llama-8b-prod",
        "endpoint": "http://127.0.0.1:8000/v1",
        "model": "team/models/llama-8b:prod",
    }
    assert CANARY not in json.dumps(manifest)


def test_hosted_pod_has_no_gpu_no_sidecar_and_the_key_by_reference():
    manifest = pod_manifest(
        operator(base_url="https://llm.example.com/v1", model="m", api_key_secret="TEAM_LLM_KEY", benchmarks="gsm8k")
    )
    assert manifest["spec"].get("initContainers") in (None, [])
    assert "dshm" not in volumes(manifest) and "model" not in volumes(manifest)
    assert "nvidia.com/gpu" not in json.dumps(manifest)  # no GPU, and no GPU node placement either
    assert manifest["spec"]["serviceAccountName"] == "evaljobs" and manifest["spec"]["priorityClassName"] == "batch-gpu"
    evaluation = containers(manifest)["base"]
    assert evaluation["command"] == COMMAND
    assert env_of(evaluation)["TEAM_LLM_KEY"] == {"secretKeyRef": {"name": "llm-keys", "key": "team"}}
    assert job_spec_of(manifest)["model"]["api_key_secret"] == "TEAM_LLM_KEY"
    assert CANARY not in json.dumps(manifest)


def test_pod_against_a_shared_server_needs_no_gpu():
    server = {
        "base_url": "http://evaljobs-vllm-abc.evals.svc.cluster.local:8000/v1",
        "model": "llama-8b",
        "checkpoint": "/models/llama-8b",
        "artifact": None,
    }
    manifest = pod_manifest(operator(server=server))
    assert manifest["spec"].get("initContainers") in (None, [])
    assert "nvidia.com/gpu" not in json.dumps(manifest)
    assert volumes(manifest)["model"]["persistentVolumeClaim"]["claimName"] == "models"  # the tokenizer
    assert job_spec_of(manifest)["model"]["endpoint"] == server["base_url"]


def test_offline_wandb_needs_no_secret(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_WANDB_DEFAULT")
    cluster = CLUSTER | {"secrets": {}}
    manifest = pod_manifest(operator(checkpoint="/models/m", server_resources={"gpus": 1}, kubernetes=cluster))
    assert "WANDB_API_KEY" not in env_of(containers(manifest)["base"])
    assert job_spec_of(manifest)["destination"]["wandb"] == "auto"  # offline in the pod: no key


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("gsm8k", "gsm8k"),
        ("/data/my bench.yaml", "data-my-bench.yaml"),
        ("manual__2026-11-26T10:00:00+00:00-" + "x" * 60, "x" * 60),
        ("__", "none"),
    ],
)
def test_label_values_are_valid_kubernetes_labels(text, label):
    import re

    from evaljobs.kubernetes.pods import label_value

    value = label_value(text)
    assert value[-60:] == label[-60:] and len(value) <= 63
    assert re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", value)


def test_results_go_to_the_results_claim_when_given():
    cluster = CLUSTER | {"results_volume_claim": "evaljobs-results"}
    manifest = pod_manifest(operator(checkpoint="/models/m", server_resources={"gpus": 1}, kubernetes=cluster))
    assert volumes(manifest)["results"] == {
        "name": "results",
        "persistentVolumeClaim": {"claimName": "evaljobs-results"},
    }
    assert manifest["spec"]["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "fsGroup": 1000}


def test_the_dataset_mirror_claim_is_mounted_and_the_pod_reads_gated_data_from_it(monkeypatch, tmp_path):
    """A worker's own mirror path never reaches the pod; the claim's mount does, read-only. With the gated
    dataset mirrored, the pod needs no HF token; without the mirror it gets the token by reference."""
    monkeypatch.setenv("EVALJOBS_DATASET_MIRROR", str(tmp_path / "worker-mirror"))
    cluster = CLUSTER | {"secrets": CLUSTER["secrets"] | {"HF_TOKEN": "hf/token"}}
    hosted = {"base_url": "https://llm.example.com/v1", "model": "m", "benchmarks": "lingoly"}
    plain = pod_manifest(operator(kubernetes=cluster, **hosted))
    assert "mirror" not in job_spec_of(plain).get("datasets", {})
    assert env_of(containers(plain)["base"])["HF_TOKEN"] == {"secretKeyRef": {"name": "hf", "key": "token"}}

    mirrored = pod_manifest(operator(kubernetes=cluster | {"dataset_mirror_claim": "hub-mirror"}, **hosted))
    assert job_spec_of(mirrored)["datasets"]["mirror"] == "/var/lib/evaljobs-mirror"
    assert volumes(mirrored)["dataset-mirror"] == {
        "name": "dataset-mirror",
        "persistentVolumeClaim": {"claimName": "hub-mirror", "readOnly": True},
    }
    [mount] = [m for m in containers(mirrored)["base"]["volumeMounts"] if m["name"] == "dataset-mirror"]
    assert mount == {"name": "dataset-mirror", "mountPath": "/var/lib/evaljobs-mirror", "readOnly": True}
    # the mirror may hold the gated dataset: an unmapped HF token is then left out, not refused
    unmapped = pod_manifest(operator(kubernetes=CLUSTER | {"dataset_mirror_claim": "hub-mirror"}, **hosted))
    assert "HF_TOKEN" not in env_of(containers(unmapped)["base"])
    with pytest.raises(Exception, match="secrets HF_TOKEN have no Kubernetes Secret"):
        pod_manifest(operator(kubernetes=CLUSTER, **hosted))  # without a mirror the token must be mapped
