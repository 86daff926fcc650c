"""Checks made before any server is started or GPU requested: every problem at once, each with its fix."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from evaljobs.engine import catalog
from evaljobs.engine.catalog import Benchmark
from evaljobs.engine.errors import PreflightError, SpecError
from evaljobs.engine.modelprep import ModelFolder, check_folder, fetch_hf_repo
from evaljobs.engine.spec import JobSpec, ModelSource, Resources

if TYPE_CHECKING:
    from evaljobs.engine.tracking import WandbTarget


@dataclass
class Checked:
    """What preflight established: the loaded benchmarks, and the model folder or the hosted API key."""

    benchmarks: list[Benchmark]
    folder: ModelFolder | None = None
    api_key: str | None = field(default=None, repr=False)
    judge_key: str | None = field(default=None, repr=False)
    hf_token: str | None = field(default=None, repr=False)
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
    """Check benchmarks, rules, secrets, the model and the endpoint; one :class:`PreflightError` lists every
    problem found. ``secrets`` defaults to the process environment; ``wandb`` gives access to W&B artifact
    checkpoints."""
    secrets = os.environ if secrets is None else secrets
    problems: list[str] = []
    try:
        benchmarks = load_benchmarks(spec.benchmarks, spec.datasets.mirror, spec.settings.backend)
    except SpecError as exc:
        benchmarks, problems = [], list(exc.problems)
    problems += installation_problems(spec, benchmarks)
    problems += rule_problems(spec, benchmarks)
    problems += [p for b in benchmarks if (p := nltk_problem(b, spec.datasets.mirror))]
    problems += [f"secret {name} ({why}) is not set; {ADD_SECRET.format(name=name)}"
                 for name, why in needed_secrets(spec, benchmarks).items() if not secrets.get(name)]  # fmt: skip
    api_key = secrets.get(spec.model.api_key_secret) if spec.model.api_key_secret else None
    folder = artifact = None
    if spec.model.hosted:
        if api_key or not spec.model.api_key_secret:
            problems += _problem(check_endpoint, spec.model.base_url, spec.model.model, api_key)
    else:
        try:
            folder = checkpoint_folder(spec.model, wandb, spec.destination.results_home)
        except PreflightError as exc:
            problems.append(str(exc))
        problems += serving_problems(spec, folder, benchmarks)
        if spec.model.endpoint:
            problems += _problem(check_endpoint, spec.model.endpoint, spec.model.display_name, None)
    if problems:
        raise PreflightError(problems)
    if spec.model.is_artifact:
        entity_project = spec.model.checkpoint.rsplit("/", 1)[0]
        artifact = f"{entity_project}/{folder.path.parent.name}:{folder.path.name}"
    judge = spec.judge
    judge_key = api_key if spec.judged_by_model_under_test else secrets.get(judge.api_key_secret or "") or None
    hf_token = secrets.get(spec.datasets.hf_token_secret) or None
    return Checked(benchmarks, folder, api_key, judge_key, hf_token, artifact)


ADD_SECRET = "add it as a team secret (Airflow: a Variable or a Connection of that name; locally: export {name}=...)"


def load_benchmarks(names: list[str], mirror: Path | None = None, backend: str = "lm_eval") -> list[Benchmark]:
    """Load every benchmark, on ``backend`` where it implements it, reading mirrored datasets from ``mirror``;
    one error lists all that fail."""
    loaded, problems = [], []
    for name in names:
        try:
            loaded.append(catalog.load(name).on(backend).mirrored(mirror))
        except SpecError as exc:
            problems += exc.problems
        except LookupError as exc:
            problems.append(f"benchmarks: {exc.args[0]}")
    if problems:
        raise SpecError(problems)
    return loaded


def engine_problem() -> str | None:
    """Why jobs cannot run in this installation (no harness at all: Airflow's side of Kubernetes mode), or None."""
    if catalog.installed_backends():
        return None
    return f"the evaluation engine is not installed here (local mode runs jobs on this machine): {catalog.ENGINE_EXTRA}"


def installation_problems(spec: JobSpec, benchmarks: list[Benchmark]) -> list[str]:
    """What the job needs that is not installed where it runs: each benchmark's harness, and the W&B client."""
    problems = [p for b in benchmarks if (p := catalog.missing_harness(b))]
    if spec.destination.wandb != "disabled" and not importlib.util.find_spec("wandb"):
        problems.append(f"destination.wandb: the W&B client is not installed: {catalog.ENGINE_EXTRA}")
    return problems


def needed_secrets(spec: JobSpec, benchmarks: list[Benchmark]) -> dict[str, str]:
    """The secrets the job needs -> what needs them: the hosted model's key, the HF token for gated datasets
    that are not mirrored, and the judge's key for judge-scored benchmarks."""
    needed = {}
    if spec.model.api_key_secret:
        needed[spec.model.api_key_secret] = "model.api_key_secret"
    if gated := [b.name for b in benchmarks if b.gated and b.dataset_dir is None]:
        needed.setdefault(spec.datasets.hf_token_secret, f"datasets.hf_token_secret: gated {', '.join(gated)}")
    judged = [b.name for b in benchmarks if b.judge]
    if judged and spec.judge.api_key_secret and not spec.judged_by_model_under_test:
        needed.setdefault(spec.judge.api_key_secret, f"judge.api_key_secret: {', '.join(judged)}")
    return needed


def catalog_benchmarks(spec: JobSpec) -> list[Benchmark]:
    """``spec``'s benchmarks as the catalog alone knows them (no benchmark file is read), on the job's backend
    and mirror; names that do not resolve are left to the job's preflight."""
    benchmarks = []
    for name in spec.benchmarks:
        try:
            benchmarks.append(catalog.resolve(name).on(spec.settings.backend).mirrored(spec.datasets.mirror))
        except LookupError:
            continue
    return benchmarks


def secret_names(spec: JobSpec) -> list[str]:
    """The secrets ``spec`` needs, known from the catalog alone: the ones the Airflow layer resolves for the job."""
    return list(needed_secrets(spec, catalog_benchmarks(spec)))


def rule_problems(spec: JobSpec, benchmarks: list[Benchmark]) -> list[str]:
    """What the job asks that the benchmarks or limits forbid, each with the fix."""
    problems = []
    if spec.model.hosted and (needs := [b.name for b in benchmarks if b.needs_logprobs]):
        problems.append(
            f"benchmarks {', '.join(needs)} are scored by log-likelihood, which needs the model's tokenizer and "
            "/v1/completions with echo+logprobs: hosted models are evaluated generatively only; pick generative "
            "benchmarks (or serve the checkpoint with vLLM)"
        )
    if not spec.model.hosted and (hosted := [b.name for b in benchmarks if b.hosted_only]):
        problems.append(
            f"benchmarks {', '.join(hosted)} need a hosted API model (tool calling through the provider's API), "
            "not a served checkpoint; evaluate them with base_url + model, or drop them"
        )
    if spec.judged_by_model_under_test and not spec.judge.allow_model_under_test:
        if judged := [b.name for b in benchmarks if b.judge]:
            problems.append(
                f"judge: the judge of {', '.join(judged)} is the model under test ({spec.judge.model} at "
                f"{spec.judge.base_url}), which would grade itself; point judge.model/judge.base_url at another "
                "model, or set judge.allow_model_under_test: true"
            )
    return problems


def catalog_problems(spec: JobSpec) -> list[str]:
    """What preflight can tell from the spec and the catalog alone (no file, secret value, model or endpoint):
    what the Airflow worker checks before it submits a pod, which would request GPUs."""
    return rule_problems(spec, catalog_benchmarks(spec))


def nltk_problem(benchmark: Benchmark, mirror: Path | None) -> str | None:
    """Why the NLTK data that ``benchmark``'s scoring loads is missing, or None."""
    if not benchmark.nltk:
        return None
    import nltk

    paths = [str(mirror / "nltk_data")] if mirror else []
    missing = []
    for resource in benchmark.nltk:
        try:
            nltk.data.find(resource, paths=paths + nltk.data.path)
        except LookupError:
            missing.append(resource)
    if not missing:
        return None
    names = " ".join(dict.fromkeys(m.split("/")[1] for m in missing))  # the NLTK packages: tokenizers/<punkt_tab>/...
    where = f"{mirror}/nltk_data" if mirror else "~/nltk_data"
    return (
        f"benchmark {benchmark.name} scores with NLTK data that is not installed ({', '.join(missing)}); run "
        f"`python -m nltk.downloader -d {where} {names}` (air-gapped: copy an nltk_data folder into the dataset "
        "mirror)"
    )


def _problem(check: Callable[..., None], *args: Any) -> list[str]:
    try:
        check(*args)
    except PreflightError as exc:
        return [str(exc)]
    return []


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


def size_problem(folder: ModelFolder, resources: Resources, field: str = "resources") -> str | None:
    """The one model-size limit: weights + KV cache at ``max_model_len`` against ``max_model_gb``; ``field``
    names the settings in the message (``server_resources`` for the operators)."""
    total = folder.weight_bytes + folder.kv_cache_bytes(resources.max_model_len)
    if total <= resources.max_model_gb * 1e9:
        return None
    return (
        f"the model needs {total / 1e9:.1f} GB (weights + KV cache at {resources.max_model_len} tokens), over the "
        f"{resources.max_model_gb:g} GB limit ({field}.max_model_gb); lower {field}.max_model_len, use a smaller "
        "or quantized checkpoint, or raise the limit"
    )


def serving_problems(spec: JobSpec, folder: ModelFolder | None, benchmarks: list[Benchmark]) -> list[str]:
    """What stops vLLM from serving ``folder`` within the job's limits."""
    model, resources = spec.model, spec.resources
    problems = []
    if folder and folder.max_position_embeddings and resources.max_model_len > folder.max_position_embeddings:
        problems.append(
            f"resources.max_model_len {resources.max_model_len} exceeds the model's context "
            f"({folder.max_position_embeddings}); lower it"
        )
    if folder and (problem := size_problem(folder, resources)):
        problems.append(problem)
    if folder and spec.settings.chat_template and not folder.has_chat_template:
        problems.append(
            "settings.chat_template is on but the checkpoint has no chat template; turn it off or "
            "add chat_template.jinja to the folder"
        )
    if folder and not folder.has_chat_template and (chat := [b.name for b in benchmarks if b.backend == "inspect"]):
        problems.append(
            f"benchmarks {', '.join(chat)} run on Inspect, which sends chat requests, but the checkpoint has no chat "
            "template; add chat_template.jinja to the folder, or run them on lm-eval (settings.backend: lm_eval)"
        )
    if not model.endpoint and (problem := vllm_problem()):
        problems.append(problem)
    return problems


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
