"""What cannot work is refused before anything is submitted, with the field to change and how."""

import json

import pytest

from evaljobs.engine.errors import SpecError
from evaljobs.kubernetes.model import ModelPlacementError
from evaljobs.kubernetes.secrets import UnmappedSecretsError
from evaljobs.operators.evaluate import WandbEvalOperator
from tests.kubernetes.manifests import CONTEXT, pod_manifest

PVC = {"model_volume_claim": "models"}


def operator(kubernetes=PVC, **kwargs) -> WandbEvalOperator:
    args = {"task_id": "evaluate", "benchmarks": "gsm8k", "execution_mode": "kubernetes", "kubernetes": kubernetes}
    return WandbEvalOperator(**(args | kwargs))


def test_three_gpus_are_refused_when_the_dag_is_parsed():
    with pytest.raises(SpecError, match=r"gpus 3 is over the limit of 2 GPUs a job \(resources.max_gpus\)"):
        operator(checkpoint="/models/m", server_resources={"gpus": 3})


def test_a_hosted_model_with_a_gpu_is_refused_at_run_time_before_submission():
    op = operator(base_url="https://llm.example.com/v1", model="m", server_resources={"gpus": 1})
    with pytest.raises(Exception, match="resources.gpus must be 0 for a hosted model"):
        op.execute(CONTEXT)  # no cluster here: reaching the submission would fail differently


def test_what_the_catalog_forbids_is_refused_before_a_pod_is_built(monkeypatch):
    def no_pod(*args):
        raise AssertionError("a pod was built")

    monkeypatch.setattr("evaljobs.kubernetes.pods.evaluation_pod", no_pod)
    op = operator(checkpoint="/models/m", server_resources={"gpus": 1}, benchmarks=["bfcl", "gsm8k"])
    with pytest.raises(Exception, match="benchmarks bfcl need a hosted API model") as info:
        op.execute(CONTEXT)
    assert "evaluate them with base_url + model, or drop them" in str(info.value)


def test_a_model_over_the_size_limit_is_refused(model_dir):
    cluster = PVC | {"model_mount_path": str(model_dir.parent)}
    small = {"gpus": 1, "max_model_len": 2048, "max_model_gb": 0.1}
    op = operator(cluster, checkpoint=str(model_dir), server_resources=small)
    with pytest.raises(ModelPlacementError) as info:
        op.execute(CONTEXT)
    assert "over the 0.1 GB limit (server_resources.max_model_gb)" in str(info.value)
    assert "KV cache at 2048 tokens" in str(info.value)
    manifest = pod_manifest(operator(cluster, checkpoint=str(model_dir), server_resources={"gpus": 1}))
    assert manifest["spec"]["initContainers"][0]["name"] == "vllm"  # the same folder fits the default limit


def test_an_unmapped_secret_is_refused_with_the_mapping_to_add(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WANDB_DEFAULT", json.dumps({"conn_type": "wandb", "password": "k"}))
    op = operator(base_url="https://llm.example.com/v1", model="m", api_key_secret="TEAM_LLM_KEY")
    with pytest.raises(UnmappedSecretsError) as info:
        op.execute(CONTEXT)
    message = str(info.value)
    assert message.startswith("secrets TEAM_LLM_KEY, WANDB_API_KEY have no Kubernetes Secret")
    assert '"TEAM_LLM_KEY": "evaljobs-secrets/TEAM_LLM_KEY"' in message


@pytest.mark.parametrize(
    ("kubernetes", "kwargs", "message"),
    [
        (PVC, {"checkpoint": "/models/m"}, "server_resources.gpus must be 1 or 2 in kubernetes mode"),
        (PVC, {"checkpoint": "HuggingFaceTB/SmolLM2-135M", "server_resources": {"gpus": 1}}, "is a Hugging Face repo"),
        ({}, {"checkpoint": "/models/m", "server_resources": {"gpus": 1}}, "set kubernetes.model_volume_claim"),
        (PVC, {"checkpoint": "/data/m", "server_resources": {"gpus": 1}}, "not under kubernetes.model_mount_path"),
    ],
)
def test_checkpoints_a_pod_cannot_serve_are_refused(kubernetes, kwargs, message):
    with pytest.raises(ModelPlacementError, match=message):
        operator(kubernetes, **kwargs).execute(CONTEXT)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"results_home": "/tmp/r"}, "or set kubernetes.results_volume_claim"),
        ({"kubernetes": {"secrets": {"K": "Bad Name"}}}, "give 'secret-name' or 'secret-name/key'"),
        ({"kubernetes": {"namespace": "Evals"}}, "'Evals' is not a Kubernetes name"),
        ({"kubernetes": {"gpu": 1}}, "kubernetes.gpu: unknown field"),
        ({"execution_mode": "local", "kubernetes": {"namespace": "x"}}, "execution_mode is 'local'"),
    ],
)
def test_settings_errors_fail_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises((ValueError, SpecError)) as info:
        operator(**({"checkpoint": "/models/m"} | kwargs))
    assert message in str(info.value)


def test_an_artifact_without_a_mapped_wandb_key_is_refused():
    op = operator(checkpoint="team/models/llama-8b:prod", server_resources={"gpus": 1}, wandb_mode="disabled")
    with pytest.raises(UnmappedSecretsError, match="secrets WANDB_API_KEY have no Kubernetes Secret"):
        op.execute(CONTEXT)
