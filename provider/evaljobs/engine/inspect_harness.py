"""The Inspect backend: ``inspect_evals`` tasks run by ``inspect_ai`` against the job's endpoint, collected into
the same :class:`~evaljobs.engine.harness.BenchmarkRun` as lm-eval's (metrics, per-example records), so bundles,
W&B runs and leaderboards do not depend on the backend. An optional extra (``[inspect]``).

Metrics are named as lm-eval names them, ``<metric>,<scorer>`` (``accuracy,match``, its standard error
``accuracy_stderr,match``). Judge-scored tasks get the job's judge as Inspect's ``grader`` model role, so they
never fall back to grading with the model under test. Requests, the judge's included, go through Inspect's own
cache under the job's cache folder: a re-run sends none again. A dataset mirror is used by running Inspect with the
mirror as working directory: ``datasets.load_dataset`` reads a local folder named like the hub dataset
(``openai/gsm8k``) before it asks the hub, so inspect_evals' own loaders read the mirror unchanged (every path
Inspect is given is absolute). ``settings.num_fewshot`` reaches the tasks that take a ``fewshot`` argument."""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from evaljobs.engine.catalog import Benchmark
from evaljobs.engine.errors import HarnessError
from evaljobs.engine.harness import BenchmarkRun, Endpoint
from evaljobs.engine.hub import environment
from evaljobs.engine.spec import Settings

PRIMARY_METRIC = "accuracy"
USAGE_KEYS = ("calls", "cached", "input_tokens", "output_tokens", "billed_input_tokens", "billed_output_tokens")


@dataclass
class Judge:
    """The model that grades judge-scored benchmarks."""

    base_url: str
    model: str
    api_key: str | None = field(default=None, repr=False)
    usd_per_million: tuple[float, float] | None = None  # (input, output) token prices, for a cost estimate


class InspectHarness:
    """Runs Inspect tasks for one job; :meth:`evaluate` mirrors :meth:`Harness.evaluate`."""

    def __init__(
        self,
        endpoint: Endpoint,
        settings: Settings,
        cache_dir: Path,
        log_dir: Path,
        judge: Judge | None = None,
        mirror: Path | None = None,
    ):
        self.endpoint, self.settings, self.judge, self.mirror = endpoint, settings, judge, mirror
        self.cache_dir, self.log_dir = (cache_dir / "inspect").resolve(), log_dir.resolve()

    def evaluate(self, benchmarks: list[Benchmark]) -> Iterator[list[BenchmarkRun | HarnessError]]:
        """One Inspect call for all ``benchmarks`` (their samples share the endpoint's connections)."""
        if benchmarks:
            yield self._evaluate(benchmarks)

    def _evaluate(self, benchmarks: list[Benchmark]) -> list[BenchmarkRun | HarnessError]:
        from inspect_ai import eval as inspect_eval
        from inspect_ai.model import CachePolicy

        settings, started = self.settings, time.monotonic()
        try:
            with _working_directory(self.mirror), environment(INSPECT_CACHE_DIR=str(self.cache_dir)):
                logs = inspect_eval(
                    [f"inspect_evals/{b.inspect}" for b in benchmarks],
                    task_args={} if settings.num_fewshot is None else {"fewshot": settings.num_fewshot},
                    model=self._model(self.endpoint.base_url, self.endpoint.model, self.endpoint.api_key),
                    model_roles=self._roles(benchmarks),
                    limit=settings.limit or None,
                    max_tasks=len(benchmarks),
                    log_dir=str(self.log_dir),
                    display="none",
                    cache=CachePolicy(expiry=None),
                    fail_on_error=True,
                    score=True,
                )
        except Exception as exc:
            names = ", ".join(b.name for b in benchmarks)
            return [HarnessError(f"benchmarks {names} failed on Inspect: {type(exc).__name__}: {_cause(str(exc))}")]
        seconds = time.monotonic() - started
        outcomes: list[BenchmarkRun | HarnessError] = []
        for benchmark, log in zip(benchmarks, logs, strict=True):
            try:
                run = _collect(benchmark, log, seconds)
            except HarnessError as exc:
                outcomes.append(exc)
                continue
            run.together = [b.name for b in benchmarks]
            grader = run.harness["tokens"].get("grader")
            if grader and self.judge and self.judge.usd_per_million:
                prices = self.judge.usd_per_million
                billed = grader["billed_input_tokens"] * prices[0] + grader["billed_output_tokens"] * prices[1]
                grader["cost_usd"] = round(billed / 1e6, 6)
            outcomes.append(run)
        return outcomes

    def _model(self, base_url: str, name: str, api_key: str | None, **config: Any) -> Any:
        from inspect_ai.model import GenerateConfig, get_model

        settings = self.settings
        generate = {
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "max_tokens": settings.max_tokens,
            "seed": settings.seed,
            "max_connections": settings.concurrency,
            "max_retries": settings.max_retries,
            "timeout": int(settings.request_timeout),
        } | config
        model = f"openai-api/evaljobs/{name}"
        return get_model(model, base_url=base_url, api_key=api_key or "none", config=GenerateConfig(**generate))

    def _roles(self, benchmarks: list[Benchmark]) -> dict[str, Any] | None:
        if not any(b.judge for b in benchmarks):
            return None
        if self.judge is None:
            raise HarnessError("judge-scored benchmarks need a judge; set the job's judge")
        # the judge grades deterministically and at its own length, whatever the model under test is given
        grader = self._model(self.judge.base_url, self.judge.model, self.judge.api_key, temperature=0.0, top_p=None,
                             max_tokens=None)  # fmt: skip
        return {"grader": grader}


def _collect(benchmark: Benchmark, log: Any, seconds: float) -> BenchmarkRun:
    if log.status != "success":
        message = _cause(log.error.message) if log.error else log.status
        raise HarnessError(f"benchmark {benchmark.name} failed on Inspect: {message} (log: {log.location})")
    scorers = log.results.scores if log.results else []
    if not scorers:
        raise HarnessError(f"benchmark {benchmark.name}: Inspect returned no scores (log: {log.location})")
    metrics: dict[str, float] = {}
    for scorer in scorers:
        values = {name: metric.value for name, metric in scorer.metrics.items()}
        for name, value in values.items():
            key = f"{PRIMARY_METRIC}_stderr" if name == "stderr" else name
            if isinstance(value, int | float) and math.isfinite(value):
                metrics[f"{key},{scorer.name}"] = float(value)
    primary = scorers[0].name
    if f"{PRIMARY_METRIC},{primary}" not in metrics:
        raise HarnessError(f"benchmark {benchmark.name}: Inspect's scorer {primary} reports no {PRIMARY_METRIC}")
    benchmark = benchmark.model_copy(update={"metric": f"{PRIMARY_METRIC},{primary}"})
    samples = [_record(benchmark, sample, primary) for sample in log.samples or []]
    usage = _usage(log)
    harness = {
        "backend": "inspect",
        "inspect_ai_version": version("inspect_ai"),
        "inspect_evals_version": version("inspect_evals"),
        "task": log.eval.task,
        "task_versions": {log.eval.task: log.eval.task_version},
        "log": str(log.location),
        "tokens": usage,
    }
    return BenchmarkRun(benchmark, metrics, len(samples), samples, seconds, harness)


def _record(benchmark: Benchmark, sample: Any, scorer: str) -> dict[str, Any]:
    """One per-example trace, as the lm-eval backend writes it."""
    from inspect_ai.scorer import value_to_float

    score = sample.scores.get(scorer) if sample.scores else None
    sent = sample.messages[:-1] if sample.messages and sample.messages[-1].role == "assistant" else sample.messages
    prompt = json.dumps([{"role": m.role, "content": m.text} for m in sent])  # as lm-eval records a chat request
    return {
        "task": benchmark.inspect,
        "doc_id": sample.id,
        "input": prompt,
        "target": sample.target,
        "score": value_to_float()(score.value) if score is not None else None,
        "output": score.answer if score is not None and score.answer is not None else sample.output.completion,
        "raw_output": sample.output.completion,
    }


def _usage(log: Any) -> dict[str, dict[str, int]]:
    """Tokens per model role (``model``, ``grader``), cached answers included (Inspect's own usage leaves them
    out), with the number of calls, how many came from the cache, and the tokens of the others (billed)."""
    counts: dict[str, dict[str, int]] = {}
    for sample in log.samples or []:
        for event in sample.events:
            if event.event != "model" or event.output is None:
                continue
            count = counts.setdefault(event.role or "model", dict.fromkeys(USAGE_KEYS, 0))
            cached = event.cache == "read"
            count["calls"] += 1
            count["cached"] += cached
            if usage := event.output.usage:
                count["input_tokens"] += usage.input_tokens
                count["output_tokens"] += usage.output_tokens
                count["billed_input_tokens"] += 0 if cached else usage.input_tokens
                count["billed_output_tokens"] += 0 if cached else usage.output_tokens
    return counts


def _cause(message: str) -> str:
    """The cause of an Inspect error: its last paragraph (the ones before repeat the whole request, with its
    newlines escaped when the error is a repr)."""
    return re.split(r"(?:\\n|\n)\s*(?:\\n|\n)", message.strip())[-1].strip()[:2000]


@contextmanager
def _working_directory(folder: Path | None) -> Iterator[None]:
    if folder is None:
        yield
        return
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)
