"""The benchmark catalog: names users pick, mapped to lm-eval tasks, Inspect tasks or custom benchmark files."""

from __future__ import annotations

import difflib
import importlib.util
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

DATA = resources.files("evaljobs") / "data"

CATEGORIES = (
    "knowledge",
    "reasoning",
    "math",
    "code",
    "reading",
    "long_context",
    "safety",
    "domain_specific",
    "instruction_following",
    "system",
    "multimodal",
)
BACKENDS = ("lm_eval", "inspect")
ENGINE_EXTRA = "pip install 'airflow-provider-evaljobs[engine]' where jobs run"


class BackendUnavailable(LookupError):
    """A benchmark that cannot be run (by any installation, or by this one); the message names why."""


class Benchmark(BaseModel):
    """One benchmark as the engine runs it."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str
    category: str
    description: str = ""
    output: Literal["multiple_choice", "generate"] = "generate"
    metric: str = ""
    baseline: float = 0.0
    fewshot: int | None = None
    task: str | None = Field(None, alias="lm_eval")  # the lm-eval task
    dataset: str | None = None  # the hub dataset the lm-eval task reads
    dataset_dir: Path | None = None  # its local copy in the job's dataset mirror, when there is one
    inspect: str | None = None  # the inspect_evals task
    custom: Path | None = None
    size: int | None = None  # rows of a custom benchmark
    params: dict[str, str] = {}
    config: dict[str, Any] | None = None
    judge: bool = False
    gated: bool = False
    hosted_only: bool = False
    nltk: tuple[str, ...] = ()  # NLTK data its scoring loads
    supported: bool = True
    aliases: tuple[str, ...] = ()
    backend: Literal["lm_eval", "inspect"] = "lm_eval"  # the harness that runs it in this job
    cluster: str | None = None  # the field of a document naming its cluster (a passage): clustered CIs (stats.py)

    @property
    def needs_logprobs(self) -> bool:
        """Multiple choice is scored by log-likelihood: the endpoint needs /v1/completions with logprobs."""
        return self.output == "multiple_choice"

    @property
    def builtin(self) -> bool:
        """An lm-eval task of its own registry (not a compiled custom benchmark)."""
        return self.config is None and self.custom is None

    def task_config(self) -> str | dict[str, Any]:
        """What lm-eval is given: a registered task name (read from the mirror when mirrored), or the compiled
        custom task config."""
        if self.config is not None:
            return self.config
        if self.dataset_dir is not None:
            return {"task": self.task or self.name, "dataset_path": str(self.dataset_dir)}
        return self.task or self.name

    def on(self, backend: str) -> Benchmark:
        """This benchmark run by ``backend`` when that implements it; else unchanged (whether it is installed is
        checked where the job runs, by :func:`missing_harness`).
        Inspect scores generatively and reports accuracy (its metric's full name is known after the run)."""
        if backend == self.backend or backend != "inspect" or not self.inspect:
            return self
        inspect = {"backend": "inspect", "output": "generate", "metric": "accuracy", "fewshot": None}
        return self.model_copy(update=inspect)

    def mirrored(self, mirror: Path | None) -> Benchmark:
        """This benchmark reading its dataset from ``mirror`` when the mirror holds it."""
        folder = mirror / self.dataset if mirror and self.dataset else None
        return self.model_copy(update={"dataset_dir": folder}) if folder and folder.is_dir() else self


@cache
def entries() -> dict[str, dict[str, Any]]:
    """Raw catalog entries by name."""
    # libyaml's loader when present: 0.02 s instead of 0.12 s, paid by every DAG file that builds a form from it
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data = yaml.load((DATA / "catalog.yaml").read_text(encoding="utf-8"), Loader=loader)  # noqa: S506
    return {entry["name"]: entry for entry in data["benchmarks"]}


@cache
def aliases() -> dict[str, str]:
    """Other accepted names (lm-eval's task names, former catalog names) -> the catalog name."""
    return {alias: name for name, entry in entries().items() for alias in entry.get("aliases", ())}


def names() -> list[str]:
    return sorted(entries())


def backends(entry: dict[str, Any]) -> list[str]:
    """The harness backends that implement an entry; custom benchmark files are compiled to lm-eval tasks."""
    found = [backend for backend in BACKENDS if backend in entry]
    return ["lm_eval", *found] if "custom" in entry else found


@cache
def installed_backends() -> frozenset[str]:
    """Backends this installation runs, found without importing them: lm-eval (the ``[engine]`` extra), and
    Inspect (``inspect_ai`` with ``inspect_evals``, the ``[inspect]`` extra)."""
    found = {"lm_eval"} if importlib.util.find_spec("lm_eval") else set()
    if importlib.util.find_spec("inspect_ai") and importlib.util.find_spec("inspect_evals"):
        found.add("inspect")
    return frozenset(found)


def unsupported(entry: dict[str, Any]) -> str | None:
    """Why no installation runs an entry (a fact of the catalog), or ``None``."""
    if not entry.get("supported", True):
        return f"takes image input ({entry['category']}), which evaljobs does not support yet"
    if not backends(entry):
        return "has no implementation in lm-eval 0.4 or inspect_evals 0.26 (the reference runs its own build)"
    return None


def unavailable(entry: dict[str, Any]) -> str | None:
    """Why this installation cannot run an entry, or ``None`` when it can."""
    if reason := unsupported(entry):
        return reason
    if installed_backends() & set(backends(entry)):
        return None
    return _not_installed("inspect" if "lm_eval" not in backends(entry) else "lm_eval", entry.get("inspect"))


def missing_harness(benchmark: Benchmark) -> str | None:
    """Why this installation cannot run ``benchmark`` on its backend (the extra to install), or ``None``. Checked
    where the job runs (its preflight), never when a spec is validated: Airflow's side carries no harness."""
    if benchmark.backend in installed_backends():
        return None
    return f"benchmark {benchmark.name!r} {_not_installed(benchmark.backend, benchmark.inspect)}"


def _not_installed(backend: str, inspect_task: str | None) -> str:
    if backend == "inspect":
        return (
            f"needs the Inspect backend (inspect_evals task {inspect_task!r}), which is not installed: "
            "pip install 'airflow-provider-evaljobs[inspect]'; `evaljobs catalog --runnable` lists the benchmarks "
            "this installation runs"
        )
    return f"needs lm-eval, which is not installed: {ENGINE_EXTRA}"


def runnable_names() -> list[str]:
    """Catalog benchmarks this installation can run (what the DAG forms offer). An installation with no harness
    at all is Airflow's side of Kubernetes mode, whose jobs run in the engine's image: it offers every benchmark
    the catalog implements, and each job's preflight checks its own."""
    if not installed_backends():
        return [name for name in names() if unsupported(entries()[name]) is None]
    return [name for name in names() if unavailable(entries()[name]) is None]


def generative_names() -> list[str]:
    """Runnable catalog benchmarks scored generatively (the ones a hosted chat model can take). For a custom
    entry the type is read from its file's ``type`` key, without reading any rows."""

    def output(entry: dict[str, Any]) -> str | None:
        if "custom" not in entry:
            return entry.get("output", "generate")
        data = yaml.safe_load((DATA / "benchmarks" / entry["custom"]).read_text(encoding="utf-8"))
        return data.get("type")

    return [name for name in runnable_names() if output(entries()[name]) == "generate"]


def is_custom_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def resolve(name: str) -> Benchmark:
    """The benchmark for a catalog name, an alias or a custom benchmark file path.

    Raises ``LookupError`` naming close matches for an unknown name, and :class:`BackendUnavailable` for a
    benchmark the catalog cannot run at all. It reads the catalog alone, so a spec validates the same with or
    without the harnesses installed; custom files are only located here, their content is checked by
    :func:`load`, which preflight calls.
    """
    if is_custom_path(name):
        return Benchmark(name=name, category="custom", custom=Path(name).expanduser())
    entry = entries().get(aliases().get(name, name))
    if entry is None:
        close = difflib.get_close_matches(name, [*names(), *aliases()], n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `evaljobs catalog` to list them"
        raise LookupError(f"unknown benchmark {name!r}; {hint} (or give a custom benchmark .yaml path)")
    if reason := unsupported(entry):
        raise BackendUnavailable(f"benchmark {name!r} {reason}")
    if "custom" in entry:
        return Benchmark(
            name=entry["name"],
            category=entry["category"],
            description=entry.get("description", ""),
            custom=Path(str(DATA / "benchmarks" / entry["custom"])),
            params=entry.get("params", {}),
        )
    benchmark = Benchmark(**entry)
    return benchmark if "lm_eval" in backends(entry) else benchmark.on("inspect")


def load(name: str) -> Benchmark:
    """Resolve ``name`` and, for a custom benchmark, read and check its file and rows."""
    benchmark = resolve(name)
    if benchmark.custom is None:
        return benchmark
    from evaljobs.engine import custom

    loaded = custom.load(benchmark.custom, benchmark.params)
    from_path = is_custom_path(name)
    name = loaded.name if from_path else benchmark.name
    return benchmark.model_copy(
        update={
            "name": name,
            "config": loaded.task_config() | {"task": name},
            "category": loaded.spec.category if from_path else benchmark.category,
            "output": loaded.output,
            "metric": loaded.metric,
            "baseline": loaded.baseline,
            "fewshot": loaded.spec.num_fewshot,
            "size": loaded.size,
            "cluster": loaded.spec.cluster,
        }
    )
