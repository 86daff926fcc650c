"""The provider's core install, as Airflow's images carry it: a fresh virtual environment with Airflow, the
cncf-kubernetes provider and this provider without extras. It adds few distributions and none of the ML stack;
the provider registers, every example DAG parses with its form, a job spec validates, `evaljobs catalog` works,
a Kubernetes DAG's pod builds and validates, and a local-mode job fails before any server starts, naming the
extra to install."""

import json
import os
import re
import subprocess
import sys
import venv
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.kubernetes.manifests import validated

BUDGET = 10  # distributions the core may add beyond Airflow + cncf-kubernetes (the provider itself included)
HEAVY = {"torch", "transformers", "lm-eval", "wandb", "matplotlib", "datasets", "pandas", "pyarrow", "scipy", "numpy"}

# Run inside the light environment: the Kubernetes DAG's first mapped evaluation, built as its pod.
POD_PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
from kubernetes.client import ApiClient
from evaljobs.operators.pod import WandbEvalPodOperator

class TI:
    map_index = 0

bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags["evaljobs_kubernetes"]
form = dag.params.get_param("benchmarks").schema
partial = dag.get_task("evaluate").partial_kwargs
wanted = {*WandbEvalPodOperator.template_fields, "kubernetes", "server_resources"}
kwargs = {k: v for k, v in partial.items() if k in wanted}
kwargs |= {"checkpoint": "/models/llama-8b", "project": "team/evals", "settings": {"limit": 5}, "benchmarks": ["gsm8k"]}
op = WandbEvalPodOperator(task_id="evaluate", **kwargs)
op.prepare_pod({"run_id": "manual__1", "ti": TI()})
pod = op.build_pod_request_obj(dry_run=True)
heavy = sorted(m for m in ("torch", "lm_eval", "wandb", "transformers", "numpy") if m in sys.modules)
print(json.dumps({"errors": bag.import_errors, "dags": sorted(bag.dag_ids), "choices": len(form["examples"]),
                  "pod": ApiClient().sanitize_for_serialization(pod), "heavy": heavy}))
"""


def names(pip: Path) -> set[str]:
    out = subprocess.run([pip, "list", "--format", "json"], capture_output=True, text=True, check=True).stdout
    return {p["name"].lower().replace("_", "-") for p in json.loads(out)}


@pytest.fixture(scope="module")
def light(tmp_path_factory) -> tuple[Path, set[str]]:
    """The light environment's bin folder, and the distributions the provider's core install added."""
    root = tmp_path_factory.mktemp("light")
    venv.create(root / "venv", with_pip=True)
    bin_ = root / "venv" / "bin"
    pins = [f"apache-airflow=={version('apache-airflow')}"]
    pins.append(f"apache-airflow-providers-cncf-kubernetes=={version('apache-airflow-providers-cncf-kubernetes')}")
    subprocess.run([bin_ / "pip", "install", "-q", *pins], check=True, capture_output=True)
    before = names(bin_ / "pip")
    subprocess.run([bin_ / "pip", "install", "-q", str(REPO)], check=True, capture_output=True)
    return bin_, names(bin_ / "pip") - before


def run(bin_: Path, *args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "VIRTUAL_ENV"))} | {
        "AIRFLOW_HOME": str(home / "airflow"),
        "EVALJOBS_HOME": str(home),
        "PATH": f"{bin_}:{os.environ['PATH']}",
    }
    return subprocess.run(args, capture_output=True, text=True, env=env, check=check, cwd=home)


def test_the_core_install_adds_few_distributions_and_no_ml_stack(light):
    _, added = light
    print(f"the core install adds {len(added)}: {sorted(added)}")
    assert "airflow-provider-evaljobs" in added
    assert not added & HEAVY
    assert len(added) <= BUDGET


def test_without_the_harness_the_provider_registers_and_the_dags_parse_and_build_pods(light, tmp_path):
    bin_, _ = light
    listed = run(bin_, "airflow", "providers", "list", home=tmp_path).stdout
    assert re.search(r"^airflow-provider-evaljobs\s", listed, re.MULTILINE)
    out = run(bin_, str(bin_ / "python"), "-c", POD_PROBE, str(REPO / "dags"), home=tmp_path).stdout
    probe = json.loads(out.splitlines()[-1])  # after the DagBag's log lines
    assert probe["errors"] == {} and len(probe["dags"]) == 6
    assert probe["choices"] > 90  # the form's pick-list: every benchmark the catalog implements
    assert probe["heavy"] == []
    manifest = validated(probe["pod"])
    evaluation = manifest["spec"]["containers"][0]
    assert evaluation["command"] == [
        "python3", "-m", "evaljobs.cli", "run", "--spec", "/etc/evaljobs/spec.json",
        "--summary-out", "/airflow/xcom/return.json",
    ]  # fmt: skip
    assert [c["name"] for c in manifest["spec"]["initContainers"]] == ["vllm"]


def test_without_the_harness_the_catalog_and_validation_work(light, tmp_path):
    bin_, _ = light
    catalog = run(bin_, "evaljobs", "catalog", home=tmp_path).stdout
    assert re.search(r"^gsm8k\s", catalog, re.MULTILINE) and "112 benchmarks" in catalog
    spec = (
        "from evaljobs.engine.spec import JobSpec; "
        "print(JobSpec.parse({'model': {'checkpoint': '/m'}, 'benchmarks': ['gsm8k', 'hle']}).benchmarks)"
    )
    assert run(bin_, str(bin_ / "python"), "-c", spec, home=tmp_path).stdout.strip() == "['gsm8k', 'hle']"


def test_a_local_job_without_the_engine_extra_fails_before_any_server_starts(light, tmp_path, model_dir):
    bin_, _ = light
    out = run(
        bin_, "evaljobs", "run", "--checkpoint", str(model_dir), "--benchmarks", "gsm8k", "--limit", "2",
        home=tmp_path, check=False,
    )  # fmt: skip
    assert out.returncode != 0
    message = out.stdout + out.stderr
    assert (
        "benchmark 'gsm8k' needs lm-eval, which is not installed: pip install 'airflow-provider-evaljobs[engine]'"
        in message
    )
    assert "the W&B client is not installed" in message
    assert "vLLM is not installed" not in message  # vLLM is there (its own environment): only the extra is missing
    assert not list(tmp_path.rglob("*.log"))  # no server was started


def test_importing_the_engine_never_imports_airflow():
    modules = sorted(p.stem for p in (REPO / "provider" / "evaljobs" / "engine").glob("*.py") if p.stem != "__init__")
    probe = (
        f"import sys; import evaljobs.cli; from evaljobs.engine import {', '.join(modules)}; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
