"""Checks made before any server is started or GPU requested. Each failure says what to change."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from evaljobs.engine import catalog
from evaljobs.engine.catalog import Benchmark
from evaljobs.engine.errors import PreflightError, SpecError
from evaljobs.engine.modelprep import ModelFolder, check_folder, fetch_hf_repo
from evaljobs.engine.spec import JobSpec, ModelSource

MODEL_SIZE_LIMIT_BYTES = 86 * 10**9  # weights + KV cache at the max context, as the reference product allows


@dataclass
class Checked:
    """What preflight established: the loaded benchmarks, and the model folder or the hosted API key."""

    benchmarks: list[Benchmark]
    folder: ModelFolder | None = None
    api_key: str | None = None


def run(spec: JobSpec, secrets: Mapping[str, str] | None = None, size_limit: int = MODEL_SIZE_LIMIT_BYTES) -> Checked:
    """Check benchmarks, the model and secrets. ``secrets`` defaults to the process environment."""
    secrets = os.environ if secrets is None else secrets
    benchmarks = load_benchmarks(spec.benchmarks)
    if spec.model.hosted:
        return Checked(benchmarks, api_key=_check_hosted(spec, benchmarks, secrets))
    return Checked(benchmarks, folder=_check_checkpoint(spec, size_limit))


def load_benchmarks(names: list[str]) -> list[Benchmark]:
    """Load every benchmark; one error lists all that fail."""
    loaded, problems = [], []
    for name in names:
        try:
            loaded.append(catalog.load(name))
        except SpecError as exc:
            problems += exc.problems
        except LookupError as exc:
            problems.append(f"benchmarks: {exc.args[0]}")
    if problems:
        raise SpecError(problems)
    return loaded


def checkpoint_folder(model: ModelSource) -> ModelFolder:
    """The checked local folder of ``model.checkpoint``: a folder, or a Hugging Face repo fetched into the HF
    cache. W&B artifacts are refused with the workaround."""
    if model.is_artifact:
        raise PreflightError(
            f"checkpoint {model.checkpoint!r} is a W&B artifact reference; this version serves local folders "
            "and Hugging Face repos: download it (wandb artifact get) and give the folder"
        )
    return check_folder(fetch_hf_repo(model.checkpoint) if model.checkpoint_kind == "hf_repo" else model.checkpoint)


def _check_checkpoint(spec: JobSpec, size_limit: int) -> ModelFolder:
    model, resources = spec.model, spec.resources
    folder = checkpoint_folder(model)
    problems = []
    if folder.max_position_embeddings and resources.max_model_len > folder.max_position_embeddings:
        problems.append(
            f"resources.max_model_len {resources.max_model_len} exceeds the model's context "
            f"({folder.max_position_embeddings}); lower it"
        )
    total = folder.weight_bytes + folder.kv_cache_bytes(resources.max_model_len)
    if total > size_limit:
        problems.append(
            f"the model needs {total / 1e9:.1f} GB (weights + KV cache at {resources.max_model_len} "
            f"tokens), over the {size_limit / 1e9:g} GB limit; lower resources.max_model_len or "
            "use a smaller or quantized checkpoint"
        )
    if spec.settings.chat_template and not folder.has_chat_template:
        problems.append(
            "settings.chat_template is on but the checkpoint has no chat template; turn it off or "
            "add chat_template.jinja to the folder"
        )
    if not model.endpoint and (problem := vllm_problem()):
        problems.append(problem)
    if problems:
        raise PreflightError("cannot serve the checkpoint:\n" + "\n".join(f"  - {p}" for p in problems))
    if model.endpoint:
        check_endpoint(model.endpoint, model.display_name, None)
    return folder


def vllm_problem() -> str | None:
    """Why vLLM cannot be started from here, or None."""
    python = os.environ.get("EVALJOBS_VLLM_PYTHON")
    if python and not shutil.which(python):
        return f"EVALJOBS_VLLM_PYTHON={python} is not an executable; point it at the vLLM env's python"
    if not python and importlib.util.find_spec("vllm") is None:
        return (
            "vLLM is not installed in this environment; set EVALJOBS_VLLM_PYTHON to the python of the "
            "environment that has it (`make` creates .venv-vllm)"
        )
    return None


def _check_hosted(spec: JobSpec, benchmarks: list[Benchmark], secrets: Mapping[str, str]) -> str | None:
    model = spec.model
    needs = [b.name for b in benchmarks if b.needs_logprobs]
    if needs:
        raise PreflightError(
            f"benchmarks {', '.join(needs)} are scored by log-likelihood, which needs the model's tokenizer and "
            "/v1/completions with echo+logprobs: hosted models are evaluated generatively only; pick generative "
            "benchmarks (or serve the checkpoint with vLLM)"
        )
    api_key = None
    if model.api_key_secret:
        api_key = secrets.get(model.api_key_secret)
        if not api_key:
            raise PreflightError(
                f"secret {model.api_key_secret} (model.api_key_secret) is not set; add it as a team secret "
                f"(locally: export {model.api_key_secret}=...)"
            )
    check_endpoint(model.base_url, model.model, api_key)
    return api_key


def check_endpoint(base_url: str, model: str, api_key: str | None, timeout: float = 15.0) -> None:
    """The endpoint answers ``GET /models`` and, when it lists models, lists ``model``."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(f"{base_url}/models", headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise PreflightError(
            f"model.base_url {base_url} is unreachable ({type(exc).__name__}: {exc}); "
            "check the URL and that the server is up"
        ) from None
    if response.status_code in (401, 403):
        raise PreflightError(
            f"model.base_url {base_url} refused the API key (HTTP {response.status_code}); "
            "check the secret named by model.api_key_secret"
        )
    if response.status_code >= 400:
        raise PreflightError(f"model.base_url {base_url} answered HTTP {response.status_code} to GET /models")
    try:
        served = [m.get("id") for m in response.json().get("data", [])]
    except (ValueError, AttributeError):
        served = []
    if served and model not in served:
        raise PreflightError(f"model.model {model!r} is not served at {base_url}; it serves: {', '.join(served)}")
