"""Importing the provider and parsing a DAG file stays light: no heavy library is imported."""

import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ("torch", "vllm", "lm_eval", "wandb", "transformers", "datasets", "kubernetes")

PROBE = """
import importlib.util, sys
import evaljobs, evaljobs.cli
from evaljobs.engine import spec, catalog, custom, serving, harness, results, leaderboard, job, preflight, command
spec_ = importlib.util.spec_from_file_location("dag", sys.argv[1])
spec_.loader.exec_module(importlib.util.module_from_spec(spec_))
evaljobs.cli._parser()
print(",".join(sorted(m for m in {HEAVY} if m in sys.modules)))
"""


# The quickstart, and a DAG of mapped evaluations (`.partial(...)` checks its arguments when the DAG is parsed).
@pytest.mark.parametrize("dag", ["evaljobs_quickstart.py", "evaljobs_checkpoint.py"])
def test_provider_and_dag_import_no_heavy_library(dag):
    out = subprocess.run(
        [sys.executable, "-c", PROBE.replace("{HEAVY}", repr(HEAVY)), str(REPO / "dags" / dag)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == ""


def test_provider_info_is_registered():
    from importlib.metadata import entry_points

    [entry] = [e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("evaljobs")]
    info = entry.load()()
    assert info["package-name"] == "airflow-provider-evaljobs"


def test_airflow_lists_the_hook_and_trigger(tmp_path):
    import json
    import os
    from pathlib import Path

    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow = str(Path(sys.executable).parent / "airflow")
    hooks = json.loads(
        subprocess.run(
            [airflow, "providers", "hooks", "-o", "json"], env=env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert {
        "connection_type": "wandb",
        "class": "evaljobs.hooks.wandb.WandbHook",
        "conn_id_attribute_name": "wandb_conn_id",
        "package_name": "airflow-provider-evaljobs",
        "hook_name": "Weights & Biases",
    } in hooks
