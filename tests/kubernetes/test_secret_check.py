"""Kubernetes Secrets a pod references are read (key names only) before submission: a missing Secret or key
is refused with the namespace and the kubectl fix instead of surfacing as CreateContainerConfigError; without
RBAC to read Secrets the check is skipped with a warning. The API is the HTTP stand-in of apiserver.py."""

import json
import logging

import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

from evaljobs.kubernetes.secrets import MissingSecretError
from evaljobs.operators.evaluate import WandbEvalOperator
from evaljobs.operators.serve import VLLMServeOperator
from tests.kubernetes.apiserver import ApiServer
from tests.kubernetes.manifests import CONTEXT

CANARY = "canary-5ecre7-value-0123456789"
CLUSTER = {
    "namespace": "evals",
    "model_volume_claim": "models",
    "secrets": {"WANDB_API_KEY": "evaljobs-secrets", "TEAM_LLM_KEY": "llm-keys/team"},
}


@pytest.fixture
def api(monkeypatch):
    with ApiServer() as server:
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", server.connection())
        conn = {"conn_type": "wandb", "password": CANARY}
        monkeypatch.setenv("AIRFLOW_CONN_WANDB_DEFAULT", json.dumps(conn))
        yield server


@pytest.fixture
def submitted(monkeypatch):
    """The pods that reached KubernetesPodOperator.execute (nothing is submitted here)."""
    pods = []
    monkeypatch.setattr(KubernetesPodOperator, "execute", lambda self, context: pods.append(self) or {"ok": 1})
    return pods


def hosted() -> WandbEvalOperator:
    return WandbEvalOperator(
        task_id="evaluate",
        base_url="https://llm.example.com/v1",
        model="m",
        api_key_secret="TEAM_LLM_KEY",
        benchmarks="gsm8k",
        execution_mode="kubernetes",
        kubernetes=CLUSTER,
    )


def test_a_missing_secret_is_refused_before_the_pod_is_submitted(api, submitted, caplog):
    api.secrets[("evals", "llm-keys")] = {"team": CANARY}
    with pytest.raises(MissingSecretError) as info:
        hosted().execute(CONTEXT)
    message = str(info.value)
    assert "Kubernetes Secret 'evaljobs-secrets' does not exist in namespace 'evals'" in message
    assert "WANDB_API_KEY via kubernetes.secrets['WANDB_API_KEY']" in message
    assert "kubectl create secret generic evaljobs-secrets -n evals --from-literal=WANDB_API_KEY=..." in message
    assert "llm-keys" not in message  # that one is complete
    assert submitted == [] and ("GET", "secrets", "llm-keys") in api.calls
    assert CANARY not in message + caplog.text


def test_a_secret_without_the_mapped_key_is_refused_naming_the_key(api, submitted, caplog):
    api.secrets[("evals", "evaljobs-secrets")] = {"WANDB_API_KEY": CANARY}
    api.secrets[("evals", "llm-keys")] = {"other": CANARY}
    with pytest.raises(MissingSecretError) as info:
        hosted().execute(CONTEXT)
    message = str(info.value)
    assert message.count("\n  - ") == 1
    assert "Kubernetes Secret 'llm-keys' in namespace 'evals' has no key 'team'" in message
    assert "kubectl patch secret llm-keys -n evals" in message and "or map TEAM_LLM_KEY to the key" in message
    assert submitted == [] and CANARY not in message + caplog.text


def test_present_secrets_let_the_pod_through(api, submitted):
    api.secrets[("evals", "evaljobs-secrets")] = {"WANDB_API_KEY": CANARY}
    api.secrets[("evals", "llm-keys")] = {"team": CANARY}
    assert hosted().execute(CONTEXT) == {"ok": 1}
    assert len(submitted) == 1
    assert sorted(name for method, kind, name in api.calls if kind == "secrets") == ["evaljobs-secrets", "llm-keys"]


def test_without_rbac_to_read_secrets_the_check_is_skipped_with_a_warning(api, submitted, caplog):
    api.forbidden.add("secrets")
    with caplog.at_level(logging.WARNING, logger="evaljobs.kubernetes.secrets"):
        assert hosted().execute(CONTEXT) == {"ok": 1}
    assert "could not check that the Kubernetes Secrets evaljobs-secrets, llm-keys exist in namespace evals" in (
        caplog.text
    )
    assert (
        "HTTP 403" in caplog.text
        and "RBAC 'get' on secrets" in caplog.text
        and "CreateContainerConfigError" in caplog.text
    )
    assert [c for c in api.calls if c[1] == "secrets"] == [("GET", "secrets", "evaljobs-secrets")]  # asked once


def test_no_secret_no_read(api, submitted, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_WANDB_DEFAULT")
    WandbEvalOperator(
        task_id="evaluate",
        base_url="https://llm.example.com/v1",
        model="m",
        benchmarks="gsm8k",
        execution_mode="kubernetes",
        kubernetes=CLUSTER,
    ).execute(CONTEXT)
    assert api.calls == [] and len(submitted) == 1


def test_the_shared_server_is_not_created_when_its_fetch_secret_is_missing(api):
    class DagRun:
        dag_id = "evals"

    op = VLLMServeOperator(
        task_id="serve",
        checkpoint="team/models/llama-8b:prod",
        server_resources={"gpus": 1},
        execution_mode="kubernetes",
        kubernetes=CLUSTER,
    )
    with pytest.raises(MissingSecretError, match="Secret 'evaljobs-secrets' does not exist in namespace 'evals'"):
        op.execute({"run_id": "manual__1", "dag_run": DagRun()})
    assert api.calls == [("GET", "secrets", "evaljobs-secrets")] and api.objects == {}
