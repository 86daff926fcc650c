"""An ``aws`` connection's credentials as the AWS variables a local-mode job gets (and none without one)."""

from __future__ import annotations

import json

from evaljobs.hooks.objectstore import ObjectStoreCredentialsHook


def test_an_aws_connection_becomes_the_standard_variables(monkeypatch):
    conn = {
        "conn_type": "aws",
        "login": "AKIAEXAMPLE",
        "password": "secret/example",
        "extra": {"endpoint_url": "http://127.0.0.1:8333", "region_name": "eu-west-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_RESULTS_STORE", json.dumps(conn))
    assert ObjectStoreCredentialsHook("results_store").env() == {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret/example",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:8333",
        "AWS_REGION": "eu-west-1",
    }


def test_no_connection_leaves_the_job_its_own_environment():
    assert ObjectStoreCredentialsHook("no_such_connection").env() == {}
