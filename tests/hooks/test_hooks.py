"""Hooks with connections and variables as Airflow reads them from the environment (any backend works alike)."""

import json
import secrets

import pytest

from evaljobs.hooks.secrets import MissingSecretsError, TeamSecretsHook
from evaljobs.hooks.wandb import WandbHook

CANARY = "canary-" + secrets.token_hex(8)


def test_secrets_from_variables_and_connections(monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("AIRFLOW_CONN_HOSTED_KEY", json.dumps({"conn_type": "generic", "password": CANARY + "2"}))
    assert TeamSecretsHook().as_env(["OPENAI_API_KEY", "HOSTED_KEY"]) == {
        "OPENAI_API_KEY": CANARY,
        "HOSTED_KEY": CANARY + "2",
    }


def test_missing_secrets_are_listed_together_with_the_fix(monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_OPENAI_API_KEY", CANARY)
    with pytest.raises(MissingSecretsError) as info:
        TeamSecretsHook().require(["OPENAI_API_KEY", "HF_TOKEN", "JUDGE_KEY"])
    message = str(info.value)
    assert message.startswith("missing team secrets: HF_TOKEN, JUDGE_KEY.")
    assert "AIRFLOW_VAR_HF_TOKEN=..." in message and "`airflow variables set JUDGE_KEY ...`" in message
    assert CANARY not in message


def test_wandb_connection(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_WANDB_DEFAULT",
        json.dumps(
            {"conn_type": "wandb", "password": CANARY, "host": "wandb.example.com", "extra": {"entity": "team"}}
        ),
    )
    creds = WandbHook().credentials
    assert (creds.api_key, creds.host, creds.entity, creds.offline) == (
        CANARY,
        "https://wandb.example.com",
        "team",
        False,
    )
    assert CANARY not in repr(creds)
    ok, message = WandbHook().test_connection()  # no W&B server is reachable from here
    assert not ok and message.startswith("W&B at https://wandb.example.com did not accept the key")
    assert CANARY not in message


def test_wandb_connection_without_key_is_offline(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WANDB_DEFAULT", json.dumps({"conn_type": "wandb"}))
    hook = WandbHook()
    assert hook.credentials.offline and hook.credentials.host == "https://api.wandb.ai"
    assert hook.test_connection() == (False, "no API key: set the connection's password to a W&B API key")
    behaviour = WandbHook.get_ui_field_behaviour()
    assert behaviour["relabeling"]["password"] == "API key" and "login" in behaviour["hidden_fields"]


def test_secret_values_are_masked_from_the_moment_they_are_read(monkeypatch):
    from airflow.sdk.log import redact

    fresh = "canary-" + secrets.token_hex(8)  # masks are process-wide: use a value no other test has read
    monkeypatch.setenv("AIRFLOW_VAR_TEAM_KEY", fresh)
    assert redact(f"the key is {fresh}") == f"the key is {fresh}"
    TeamSecretsHook().require(["TEAM_KEY"])
    assert redact(f"the key is {fresh}") == "the key is ***"


def test_wandb_target_and_child_environment(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_WANDB_TEAM",
        json.dumps({"conn_type": "wandb", "password": CANARY, "host": "wandb.example.com", "extra": {"entity": "t"}}),
    )
    hook = WandbHook("wandb_team")
    target = hook.target()
    assert (target.api_key, target.host, target.entity, target.mode, target.offline) == (
        CANARY,
        "https://wandb.example.com",
        "t",
        "auto",
        False,
    )
    assert CANARY not in repr(target)
    assert hook.env() == {"WANDB_API_KEY": CANARY, "WANDB_BASE_URL": "https://wandb.example.com", "WANDB_ENTITY": "t"}
    assert "WANDB_API_KEY" not in __import__("os").environ  # handed on, never put into this process's environment


def test_without_a_wandb_connection_runs_are_offline():
    target = WandbHook("no_such_connection").target()
    assert target.offline and target.api_key is None and target.host is None
    assert WandbHook("no_such_connection").env() == {}
