"""The benchmark catalog: names users pick, mapped to lm-eval tasks or custom benchmark files."""

from __future__ import annotations

import difflib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

DATA = resources.files("evaljobs") / "data"


class Benchmark(BaseModel):
    """One benchmark as the engine runs it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    category: str
    output: Literal["multiple_choice", "generate"]
    metric: str
    baseline: float
    fewshot: int | None = None
    task: str | None = None
    custom: Path | None = None
    params: dict[str, str] = {}
    config: dict[str, Any] | None = None
    judge: bool = False
    gated: bool = False

    @property
    def needs_logprobs(self) -> bool:
        """Multiple choice is scored by log-likelihood: the endpoint needs /v1/completions with logprobs."""
        return self.output == "multiple_choice"

    def task_config(self) -> str | dict[str, Any]:
        """What lm-eval is given: a registered task name, or the compiled custom task config."""
        return self.config if self.config is not None else self.task or self.name


@cache
def entries() -> dict[str, dict[str, Any]]:
    """Raw catalog entries by name."""
    data = yaml.safe_load((DATA / "catalog.yaml").read_text(encoding="utf-8"))
    return {entry["name"]: entry for entry in data["benchmarks"]}


def names() -> list[str]:
    return sorted(entries())


def generative_names() -> list[str]:
    """Catalog benchmarks scored generatively (the ones a hosted chat model can take). For a custom entry the
    type is read from its file's ``type`` key, without reading any rows."""

    def output(entry: dict[str, Any]) -> str | None:
        if "custom" not in entry:
            return entry["output"]
        data = yaml.safe_load((DATA / "benchmarks" / entry["custom"]).read_text(encoding="utf-8"))
        return data.get("type")

    return sorted(name for name, entry in entries().items() if output(entry) == "generate")


def is_custom_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml"))


def resolve(name: str) -> Benchmark:
    """The benchmark for a catalog name or a custom benchmark file path.

    Raises ``LookupError`` naming close matches for an unknown name. Custom files are only located here;
    their content is checked by :func:`load`, which preflight calls.
    """
    if is_custom_path(name):
        return Benchmark(
            name=name, category="custom", output="generate", metric="", baseline=0.0, custom=Path(name).expanduser()
        )
    entry = entries().get(name)
    if entry is None:
        close = difflib.get_close_matches(name, names(), n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "run `evaljobs catalog` to list them"
        raise LookupError(f"unknown benchmark {name!r}; {hint} (or give a custom benchmark .yaml path)")
    if "custom" in entry:
        return Benchmark(
            name=name,
            category=entry["category"],
            output="generate",
            metric="",
            baseline=0.0,
            custom=Path(str(DATA / "benchmarks" / entry["custom"])),
            params=entry.get("params", {}),
        )
    return Benchmark(**entry)


def load(name: str) -> Benchmark:
    """Resolve ``name`` and, for a custom benchmark, read and check its file and rows."""
    benchmark = resolve(name)
    if benchmark.custom is None:
        return benchmark
    from evaljobs.engine import custom

    loaded = custom.load(benchmark.custom, benchmark.params)
    name = loaded.name if is_custom_path(name) else name
    return benchmark.model_copy(
        update={
            "name": name,
            "config": loaded.task_config() | {"task": name},
            "category": loaded.spec.category if is_custom_path(name) else benchmark.category,
            "output": loaded.output,
            "metric": loaded.metric,
            "baseline": loaded.baseline,
            "fewshot": loaded.spec.num_fewshot,
        }
    )
