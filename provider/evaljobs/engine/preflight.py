"""Checks made before any server is started or GPU requested. Each failure says what to change."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from evaljobs.engine import catalog
from evaljobs.engine.catalog import Benchmark
from evaljobs.engine.errors import PreflightError, SpecError
from evaljobs.engine.modelprep import ModelFolder, check_folder, fetch_hf_repo
from evaljobs.engine.spec import JobSpec, ModelSource

if TYPE_CHECKING:
    from evaljobs.engine.tracking import WandbTarget


@dataclass
class Checked:
    """What preflight established: the loaded benchmarks, and the model folder or the hosted API key."""

    benchmarks: list[Benchmark]
    folder: ModelFolder | None = None
    api_key: str | None = field(default=None, repr=False)
    artifact: str | None = None  # the W&B model artifact, resolved to its version (entity/project/name:v3)

    @property
    def model_name(self) -> str | None:
        """The leaderboard row of an artifact checkpoint: its resolved version, not a moving alias."""
        return self.artifact.rsplit("/", 1)[-1] if self.artifact else None


def run(
    spec: JobSpec,
    secrets: Mapping[str, str] | None = None,
    wandb: WandbTarget | None = None,
) -> Checked:
    """Check benchmarks, the model and secrets. ``secrets`` defaults to the process environment; ``wandb``
    gives access to W&B artifact checkpoints."""
    secrets = os.environ if secrets is None else secrets
    benchmarks = load_benchmarks(spec.benchmarks)
    if spec.model.hosted:
        return Checked(benchmarks, api_key=_check_hosted(spec, benchmarks, secrets))
    folder = _check_checkpoint(spec, wandb)
    artifact = None
    if spec.model.is_artifact:
        entity_project = spec.model.checkpoint.rsplit("/", 1)[0]
        artifact = f"{entity_project}/{folder.path.parent.name}:{folder.path.name}"
    return Checked(benchmarks, folder=folder, artifact=artifact)


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


def checkpoint_folder(
    model: ModelSource, wandb: WandbTarget | None = None, results_home: Path | None = None
) -> ModelFolder:
    """The checked local folder of ``model.checkpoint``: a folder, a Hugging Face repo fetched into the HF
    cache, or a W&B artifact downloaded under ``<results home>/artifacts`` (once per version) or already fetched
    into ``model.folder``."""
    if model.is_artifact and model.folder:
        return check_folder(fetched_version(model))
    if model.is_artifact:
        from evaljobs.engine.spec import default_results_home
        from evaljobs.engine.tracking import WandbTarget, download_model

        root = (results_home or default_results_home()) / "artifacts"
        return check_folder(download_model(model.checkpoint, wandb or WandbTarget(), root))
    return check_folder(fetch_hf_repo(model.checkpoint) if model.checkpoint_kind == "hf_repo" else model.checkpoint)


def fetch_artifact(ref: str, link: Path, wandb: WandbTarget) -> ModelFolder:
    """Download model artifact ``ref`` beside ``link`` as local mode lays downloads out
    (``entity/project/name/version``), check it, and point ``link`` at it: a job given ``model.folder=link``
    serves it and records that version without asking W&B again (the fetch-model init container of pods)."""
    from evaljobs.engine.spec import ARTIFACT_REF
    from evaljobs.engine.tracking import download_model

    if not ARTIFACT_REF.match(ref):
        raise PreflightError(f"{ref!r} is not a W&B artifact; give entity/project/name:alias")
    link = Path(link)
    folder = check_folder(download_model(ref, wandb, link.parent))
    link.unlink(missing_ok=True)
    link.symlink_to(folder.path.relative_to(link.parent), target_is_directory=True)
    return folder


def fetched_version(model: ModelSource) -> Path:
    """The version folder that ``model.folder`` links to, checked to be a download of ``model.checkpoint``."""
    path = Path(model.folder).expanduser().resolve()
    entity, project, name = model.checkpoint.split(":")[0].split("/")
    if not path.is_dir() or path.parts[-4:-1] != (entity, project, name) or not re.fullmatch(r"v\d+", path.name):
        raise PreflightError(
            f"model.folder {model.folder} is not a fetched version of {model.checkpoint} (it resolves to {path}); "
            f"fetch it with `evaljobs fetch-model {model.checkpoint} --link {model.folder}`, or leave folder out"
        )
    return path


def _check_checkpoint(spec: JobSpec, wandb: WandbTarget | None) -> ModelFolder:
    model, resources = spec.model, spec.resources
    folder = checkpoint_folder(model, wandb, spec.destination.results_home)
    problems = []
    if folder.max_position_embeddings and resources.max_model_len > folder.max_position_embeddings:
        problems.append(
            f"resources.max_model_len {resources.max_model_len} exceeds the model's context "
            f"({folder.max_position_embeddings}); lower it"
        )
    total = folder.weight_bytes + folder.kv_cache_bytes(resources.max_model_len)
    if total > resources.max_model_gb * 1e9:
        problems.append(
            f"the model needs {total / 1e9:.1f} GB (weights + KV cache at {resources.max_model_len} "
            f"tokens), over the {resources.max_model_gb:g} GB limit (resources.max_model_gb); lower "
            "resources.max_model_len, use a smaller or quantized checkpoint, or raise the limit"
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
