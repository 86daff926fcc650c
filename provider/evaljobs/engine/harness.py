"""Run benchmarks against an OpenAI-compatible endpoint with lm-evaluation-harness.

Log-likelihood (multiple choice) needs ``/v1/completions`` with echo + logprobs, so it goes through lm-eval's
``local-completions`` model; chat-only endpoints use ``local-chat-completions`` (generative tasks only;
preflight refuses the rest). Requests are sent ``settings.concurrency`` at a time, retried by
:mod:`evaljobs.engine.retrying` (``Retry-After``, jittered backoff, a deadline; counted per benchmark), and
cached per model in lm-eval's SQLite request cache, written as each answer arrives: re-running a finished
benchmark sends no request, and an interrupted one resumes where it stopped.

The benchmarks of a job are evaluated together, in one lm-eval call: lm-eval gathers the requests of every
task by type, so they share the endpoint's concurrency instead of waiting for each other (measured in
``bench/overhead.py``). Two lm-eval costs that buy a job nothing are avoided: indexing its ~14,000 task
YAML files (~10 s here) when every benchmark is a compiled custom task, and ``torch``'s ``collect_env``
(~1 s a call, it runs ``pip list``); the job records its own hardware and versions.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import weakref
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evaljobs.engine.catalog import Benchmark
from evaljobs.engine.errors import HarnessError
from evaljobs.engine.spec import Settings
from evaljobs.engine.tokenizer import usable

if TYPE_CHECKING:
    from evaljobs.engine.shards import Shard

SLICE_ROWS = 1000  # rows of a custom benchmark in one lm-eval call: lm-eval holds every request of a call


@dataclass
class Endpoint:
    """Where requests go. ``tokenizer`` is a local folder (checkpoints); hosted chat endpoints have none."""

    base_url: str
    model: str
    api: str = "completions"
    tokenizer: str | None = None
    api_key: str | None = field(default=None, repr=False)
    max_length: int = 2048


class RecordsFile:
    """Per-example records spooled to a JSON-lines file as they are made, read back one at a time: a large
    benchmark's records are never all in memory. The file is removed when the object is dropped."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix="records-", suffix=".jsonl", dir=folder)
        os.close(fd)
        self.path, self.count = Path(name), 0
        weakref.finalize(self, self.path.unlink, missing_ok=True)

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                self.count += 1

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self.path.open(encoding="utf-8") as f:
            yield from map(json.loads, f)

    def __len__(self) -> int:
        return self.count


@dataclass
class BenchmarkRun:
    """The outcome of one benchmark: lm-eval's metrics and the per-example records."""

    benchmark: Benchmark
    metrics: dict[str, float]
    n_samples: int
    samples: Iterable[dict[str, Any]]  # a list, or a RecordsFile for a benchmark evaluated in slices
    seconds: float
    harness: dict[str, Any]
    subscores: dict[str, float] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    together: list[str] = field(default_factory=list)  # the benchmarks evaluated in the same call
    shard: Shard | None = None  # a shard job's part of the benchmark (no metrics: the merge computes them)

    @property
    def score(self) -> float:
        return self.metrics[self.benchmark.metric]


def model_args(endpoint: Endpoint, settings: Settings) -> dict[str, Any]:
    """lm-eval's ``local-completions`` / ``local-chat-completions`` arguments for ``endpoint``."""
    path = "/completions" if endpoint.api == "completions" else "/chat/completions"
    args: dict[str, Any] = {
        "model": endpoint.model,
        "base_url": endpoint.base_url + path,
        "num_concurrent": settings.concurrency,
        "max_retries": 1,  # one attempt in lm-eval's own loop: retries are ours (evaljobs.engine.retrying)
        "timeout": int(settings.request_timeout),
        "max_length": endpoint.max_length,
        "seed": settings.seed,
    }
    if endpoint.tokenizer and usable(endpoint.tokenizer) and not settings.chat_template:
        # the folder's tokenizer.json without transformers and torch (see evaljobs.engine.tokenizer)
        args |= {
            "tokenizer_folder": endpoint.tokenizer,
            "tokenizer_backend": "none",
            "add_bos_token": adds_bos_token(endpoint.tokenizer),
        }
    elif endpoint.tokenizer:
        args |= {
            "tokenizer": endpoint.tokenizer,
            "tokenizer_backend": "huggingface",
            "add_bos_token": adds_bos_token(endpoint.tokenizer),
        }
    else:
        args |= {"tokenizer_backend": "none", "tokenized_requests": False}
    if endpoint.api_key:
        args["header"] = {"Authorization": f"Bearer {endpoint.api_key}"}
    return args


def adds_bos_token(tokenizer_dir: str) -> bool:
    """Whether the model's own tokenizer prepends BOS: lm-eval's API models never do unless told to.

    Matching the tokenizer keeps vLLM-served log-likelihoods equal to those of transformers.
    """
    config = Path(tokenizer_dir) / "tokenizer_config.json"
    return config.is_file() and bool(json.loads(config.read_text()).get("add_bos_token", False))


def generation_kwargs(settings: Settings) -> dict[str, Any] | None:
    """Job-wide overrides of the benchmarks' generation settings."""
    kwargs: dict[str, Any] = {}
    if settings.temperature > 0:
        kwargs |= {"do_sample": True, "temperature": settings.temperature}
    if settings.top_p is not None:
        kwargs["top_p"] = settings.top_p
    if settings.max_tokens is not None:
        kwargs["max_gen_toks"] = settings.max_tokens
    return kwargs or None


def task_for(benchmark: Benchmark, settings: Settings, groups: Collection[str] = ()) -> str | dict[str, Any]:
    """lm-eval's task argument, with the job's (or the catalog's default) few-shot count and the dataset mirror
    applied. ``groups``: lm-eval's registered group names.

    lm-eval 0.4.13 builds a top-level dict as a new task of its own, but merges the overrides of a group's
    member into the registered task (or group) it names: a built-in with overrides is wrapped in a one-member
    group, which adds no metric of its own."""
    fewshot = settings.num_fewshot if settings.num_fewshot is not None else benchmark.fewshot
    overrides: dict[str, Any] = {} if fewshot is None else {"num_fewshot": fewshot}
    if benchmark.config is not None:
        return benchmark.config | overrides
    task = benchmark.task or benchmark.name
    if benchmark.dataset_dir is not None:
        overrides["dataset_path"] = str(benchmark.dataset_dir)
    if not overrides:
        return task
    member = {"group" if task in groups else "task": task, **overrides}
    return {"group": f"evaljobs::{benchmark.name}", "task": [member]}


class _OwnSettings(logging.Filter):
    """Drops lm-eval's warning that generation settings override the tasks': a job's settings do that on purpose
    (its metrics.json records them), and a successful job's log holds no warning that is not a problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("generation_kwargs:")


OWN_SETTINGS = _OwnSettings()


class Uncached(Exception):
    """A cache-only harness was asked for requests that its request cache does not hold."""


class Harness:
    """One lm-eval model object, reused for every benchmark of a job."""

    def __init__(
        self,
        endpoint: Endpoint,
        settings: Settings,
        cache_dir: Path,
        alive: Callable[[], bool] | None = None,
        mirror: Path | None = None,
        log: Callable[[str], None] = print,
        cache_only: bool = False,
        copy: Callable[[str, Any, Any], None] | None = None,
    ):
        """``alive``: whether the server we started still runs (requests to a dead one are not retried);
        ``mirror``: the dataset mirror, whose ``nltk_data`` folder scoring reads first; ``log``: where the
        progress lines go; ``cache_only``: answer from the request cache alone, raising :class:`Uncached` (out
        of :meth:`evaluate` too) as soon as lm-eval has a request the cache does not hold; ``copy``: handed each
        answer as lm-eval caches it (:class:`evaljobs.engine.cachecopy.CacheCopy`)."""
        from evaljobs.engine.retrying import RetryPolicy

        if mirror and (mirror / "nltk_data").is_dir():
            import nltk

            nltk.data.path.insert(0, str(mirror / "nltk_data"))

        self.settings = settings
        self.chat = endpoint.api == "chat"
        self.lm = _tracked(endpoint.api).create_from_arg_obj(model_args(endpoint, settings), {})
        self.lm.policy = RetryPolicy(self.lm.base_url, settings.max_retries, settings.retry_deadline, alive=alive)
        self.log, self.lm.cache_only, self.lm.copy_answer = log, cache_only, copy
        logging.getLogger("lm_eval.evaluator").addFilter(OWN_SETTINGS)
        self._task_managers: dict[bool, Any] = {}
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.cache_dir, self.cache = cache_dir, str(cache_dir / "requests")

    def run(self, benchmark: Benchmark) -> BenchmarkRun:
        """Evaluate one benchmark; lm-eval's errors become a :class:`HarnessError` naming the benchmark."""
        return self._evaluate([benchmark])[0]

    def evaluate(self, benchmarks: list[Benchmark]) -> Iterator[list[BenchmarkRun | HarnessError]]:
        """Evaluate ``benchmarks``, yielding outcomes as they are known: all of them from one call, or, when
        that call fails, each benchmark alone (their answers so far come from the cache), so one broken
        benchmark does not fail the others."""
        if self.settings.shards > 1:  # each benchmark alone: its rows are this shard's (see evaljobs.engine.shards)
            for benchmark in benchmarks:
                try:
                    yield [self._evaluate_shard(benchmark)]
                except HarnessError as exc:
                    yield [exc]
            return
        sliced = [b for b in benchmarks if self._slices(b)]
        together = [b for b in benchmarks if b not in sliced]
        for benchmark in sliced:  # first: this process is at its smallest before lm-eval's first call
            convert_in_child(benchmark)
        if len(together) > 1:
            try:
                yield self._evaluate(together)
                together = []
            except HarnessError:
                pass
        for benchmark in together + sliced:
            try:
                yield [self._evaluate_in_slices(benchmark)] if benchmark in sliced else self._evaluate([benchmark])
            except HarnessError as exc:
                yield [exc]

    def _slices(self, benchmark: Benchmark) -> list[range]:
        """The row ranges of a custom benchmark too large for one lm-eval call (none for the others)."""
        rows = min(benchmark.size or 0, self.settings.limit or benchmark.size or 0)
        if benchmark.custom is None or rows <= SLICE_ROWS:
            return []
        return [range(start, min(rows, start + SLICE_ROWS)) for start in range(0, rows, SLICE_ROWS)]

    def _evaluate_in_slices(self, benchmark: Benchmark) -> BenchmarkRun:
        """One lm-eval call a slice of rows, so memory stays flat in the number of rows: each slice's records
        are spooled to a file and lm-eval's objects dropped before the next call. The metrics (all means, for
        custom benchmarks) and their standard errors come from every row's values, as lm-eval computes them."""
        from lm_eval.api.metrics import mean, mean_stderr

        started, name = time.monotonic(), benchmark.name
        self.lm.policy.retries.clear()
        records = RecordsFile(self.cache_dir / "spool")
        values: dict[tuple[str, str], list[float]] = {}
        try:
            for rows in self._slices(benchmark):
                out = self._call([benchmark], samples={name: list(rows)})
                for sample in out["samples"].get(name, []):
                    for metric in sample["metrics"]:
                        values.setdefault((metric, sample["filter"]), []).append(sample[metric])
                records.extend(_records(name, out, benchmark))
                del out["samples"]
            metrics = {f"{m},{f}": mean(v) for (m, f), v in values.items()}
            metrics |= {f"{m}_stderr,{f}": mean_stderr(v) for (m, f), v in values.items()}
            out |= {"results": {name: metrics}, "samples": {}, "n-samples": {name: {"effective": len(records)}}}
            run = _collect(benchmark, out, time.monotonic() - started, records)
        except (HarnessError, Uncached):
            raise
        except Exception as exc:
            raise HarnessError(f"benchmark {name} failed: {type(exc).__name__}: {exc}") from exc
        run.retries, run.together = self.lm.policy.counts(), [name]
        return run

    def _evaluate_shard(self, benchmark: Benchmark) -> BenchmarkRun:
        """This shard's rows of ``benchmark`` (:func:`evaljobs.engine.shards.rows_of`), a slice at a time for a
        large custom benchmark: the per-example records and every per-sample metric value, for the merge."""
        from evaljobs.engine import shards

        started, name = time.monotonic(), benchmark.name
        self.lm.policy.retries.clear()
        records, values = RecordsFile(self.cache_dir / "spool"), RecordsFile(self.cache_dir / "spool")
        try:
            leaves = shards.leaf_rows(benchmark, self.settings, self.task_manager([benchmark]))
            picks = shards.rows_of(leaves, self.settings.shard or 0, self.settings.shards, benchmark.name)
            chunks = range(0, max(len(rows) for rows in picks.values()), SLICE_ROWS)
            calls = [{leaf: rows[i : i + SLICE_ROWS]} for leaf, rows in picks.items() for i in chunks]
            calls = calls if benchmark.custom is not None else [picks]  # a built-in (a group): one call
            for samples in calls:
                out = self._call([benchmark], samples=samples)
                values.extend(v for leaf in samples for v in shards.sample_values(leaf, out))
                records.extend(r for leaf in samples for r in _records(leaf, out, benchmark))
                harness = _collect(benchmark, out, 0.0, records).harness
                del out["samples"]
        except (HarnessError, Uncached):
            raise
        except Exception as exc:
            raise HarnessError(f"benchmark {name} failed: {type(exc).__name__}: {exc}") from exc
        run = BenchmarkRun(benchmark, {}, len(records), records, time.monotonic() - started, harness)
        run.shard = shards.Shard(self.settings.shard or 0, self.settings.shards, leaves, values)
        run.retries, run.together = self.lm.policy.counts(), [name]
        return run

    def task_manager(self, benchmarks: list[Benchmark]) -> Any:
        """lm-eval's task index: its built-in tasks only when a benchmark names one."""
        from lm_eval.tasks import TaskManager

        registry = any(b.builtin for b in benchmarks)
        if registry not in self._task_managers:
            self._task_managers[registry] = TaskManager(include_defaults=registry)
        return self._task_managers[registry]

    def _evaluate(self, benchmarks: list[Benchmark]) -> list[BenchmarkRun]:
        names = ", ".join(b.name for b in benchmarks)
        started = time.monotonic()
        self.lm.policy.retries.clear()
        try:
            out = self._call(benchmarks)
            seconds = time.monotonic() - started
            runs = [_collect(b, out, seconds) for b in benchmarks]
        except (HarnessError, Uncached):
            raise
        except Exception as exc:
            label = "benchmark" if len(benchmarks) == 1 else "benchmarks"
            raise HarnessError(f"{label} {names} failed: {type(exc).__name__}: {exc}") from exc
        retries = self.lm.policy.counts()
        for run in runs:
            run.retries, run.together = retries, [b.name for b in benchmarks]
        return runs

    def _call(self, benchmarks: list[Benchmark], samples: dict[str, list[int]] | None = None) -> dict[str, Any]:
        """lm-eval's ``simple_evaluate`` of ``benchmarks`` (the rows ``samples`` names, else up to the limit)."""
        import lm_eval

        settings = self.settings
        self.lm.progress = Progress(benchmarks, self.log)
        manager = self.task_manager(benchmarks)
        groups = set(manager.all_groups) if any(b.builtin for b in benchmarks) else set()
        with _own_env_info():
            return lm_eval.simple_evaluate(
                model=self.lm,
                tasks=[task_for(b, settings, groups) for b in benchmarks],
                limit=None if samples else settings.limit or None,
                samples=samples,
                log_samples=True,
                use_cache=self.cache,
                # A chat endpoint applies the model's template itself; lm-eval must send messages to it.
                apply_chat_template=settings.chat_template or self.chat,
                system_instruction=settings.system_prompt,
                gen_kwargs=generation_kwargs(settings),
                random_seed=settings.seed,
                numpy_random_seed=settings.seed,
                torch_random_seed=None,  # nothing here runs torch; seeding it imports it (~2 s a job)
                fewshot_random_seed=settings.seed,
                bootstrap_iters=1000,
                task_manager=manager,
            )


class Progress:
    """Requests answered per benchmark during one lm-eval call, logged as each benchmark passes a tenth of its
    requests and at least every ``every`` seconds while answers arrive: done/total per benchmark, with the
    rate and time left of all the requests being sent. lm-eval hands the model the requests its cache does not
    hold, of every task at once and sorted by length, so one benchmark's own rate would say little. A task is
    counted under the benchmark it belongs to (the benchmark's task or group, or a subtask named after it)."""

    def __init__(self, benchmarks: list[Benchmark], log: Callable[[str], None], every: float = 15.0):
        self.tasks = {b.task or b.name: b.name for b in benchmarks}
        self.log, self.every = log, every
        self.sending([], key=lambda r: r)

    def benchmark(self, task: str) -> str:
        if task in self.tasks:
            return self.tasks[task]
        owners = [t for t in self.tasks if task.startswith(t + "_")]
        return self.tasks[max(owners, key=len)] if owners else task

    def sending(self, requests: list[Any], key: Callable[[Any], Any]) -> None:
        """``requests`` (lm-eval ``Instance`` objects) are about to be sent; ``key`` gives each one's cache key."""
        self.waiting: dict[Any, list[str]] = {}  # a request's cache key -> the benchmarks that sent it
        self.total: Counter[str] = Counter()
        for request in requests:
            name = self.benchmark(request.task_name)
            self.waiting.setdefault(key(request), []).append(name)
            self.total[name] += 1
        self.done: Counter[str] = Counter()
        self.began = self.shown_at = time.monotonic()
        self.shown: Counter[str] = Counter()  # each benchmark's count at its last line
        if requests:
            listed = ", ".join(f"{name} {count}" for name, count in self.total.items())
            self.log(f"    requests to send (the others are in the cache): {listed}")

    def answered(self, key: Any) -> None:
        names = self.waiting.get(key)
        if not names:
            return
        name = names.pop()
        self.done[name] += 1
        done, total, now = self.done[name], self.total[name], time.monotonic()
        if done == total or done * 10 // total > self.shown[name] * 10 // total or now - self.shown_at >= self.every:
            self.shown[name], self.shown_at = done, now
            self.log(self.line(name, now))

    def line(self, name: str, now: float) -> str:
        done, total = self.done[name], self.total[name]
        sent, answered, seconds = self.total.total(), self.done.total(), now - self.began
        rate = answered / seconds if seconds > 0 else 0.0
        left = f", {(sent - answered) / rate:.0f} s left" if rate and answered < sent else ""
        return (
            f"    progress {name}: {done}/{total} requests ({100 * done // total} %); "
            f"all: {answered}/{sent} in {seconds:.1f} s, {rate:.1f} requests/s{left}"
        )


class _CountingHook:
    """lm-eval's cache hook, which the model calls with each answer as it arrives, telling the model's
    :class:`Progress` too, and its ``copy_answer`` (the copy to object storage) when it has one."""

    def __init__(self, hook: Any, model: Any):
        self.hook, self.model = hook, model

    def add_partial(self, attr: str, req: Any, res: Any) -> None:
        self.hook.add_partial(attr, req, res)
        if self.model.copy_answer is not None:
            self.model.copy_answer(attr, req, res)
        self.model.progress.answered(req[0] if attr == "generate_until" else req)


@cache
def _tracked(api: str) -> type:
    """The retrying lm-eval API model of ``api``, reporting its answers to its ``progress`` (its own bars off)."""
    from evaljobs.engine.retrying import api_model

    class Tracked(api_model(api)):
        progress: Progress
        cache_only = False
        copy_answer: Callable[[str, Any, Any], None] | None = None

        def set_cache_hook(self, cache_hook: Any) -> None:
            super().set_cache_hook(_CountingHook(cache_hook, self))

        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
            self.sending(requests, "loglikelihood", lambda r: r.args)
            return super().loglikelihood(requests, disable_tqdm=True)

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
            self.sending(requests, "generation", lambda r: r.args[0])
            return super().generate_until(requests, disable_tqdm=True)

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
            self.sending(requests, "rolling loglikelihood")  # answers without a cache key: not counted
            return super().loglikelihood_rolling(requests, disable_tqdm=True)

        def sending(self, requests: list[Any], kind: str, key: Callable[[Any], Any] | None = None) -> None:
            """lm-eval calls the model only with the requests its cache does not hold (never with none)."""
            if self.cache_only:
                raise Uncached(f"{len(requests)} {kind} requests (at least) are not in the request cache")
            if key:
                self.progress.sending(requests, key)

    return Tracked


def convert_in_child(benchmark: Benchmark) -> None:
    """Have ``datasets`` convert a large custom benchmark's data files to its Arrow cache in a child process,
    with the arguments lm-eval loads them with (and the same cache: the child inherits the environment).
    Converting holds a whole file in memory, and the process keeps those pages (18 MiB more for 10,000
    generated rows than for 1,000, measured); lm-eval then only maps the cached Arrow file. When the child
    fails, lm-eval's own load reports the problem."""
    config = benchmark.task_config()
    kwargs = {"path": config["dataset_path"], **config.get("dataset_kwargs", {})}
    code = "import datasets, json, sys; datasets.load_dataset(**json.loads(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, check=False)


@contextmanager
def _own_env_info() -> Iterator[None]:
    """lm-eval's ``add_env_info`` without ``torch.utils.collect_env`` (~1 s a call: it runs ``pip list``)."""
    from importlib.metadata import version

    import lm_eval.evaluator

    def add_env_info(storage: dict[str, Any]) -> None:
        storage["lm_eval_version"] = version("lm_eval")
        storage["pretty_env_info"] = "not collected (see the job's hardware and versions)"

    original = lm_eval.evaluator.add_env_info
    lm_eval.evaluator.add_env_info = add_env_info
    try:
        yield
    finally:
        lm_eval.evaluator.add_env_info = original


def _collect(
    benchmark: Benchmark, out: dict[str, Any], seconds: float, records: RecordsFile | None = None
) -> BenchmarkRun:
    """``benchmark``'s run from lm-eval's output (``records``: its per-example records, when already made)."""
    task = benchmark.task or benchmark.name
    results = out["results"]
    if task not in results:
        raise HarnessError(f"benchmark {benchmark.name}: lm-eval returned no results for task {task!r}")
    metrics = {k: float(v) for k, v in results[task].items() if "," in k and isinstance(v, (int, float))}
    leaves = _leaf_tasks(task, out.get("group_subtasks", {}))
    samples = records if records is not None else [r for t in leaves for r in _records(t, out, benchmark)]
    n = sum(out["n-samples"][t]["effective"] for t in leaves if t in out.get("n-samples", {}))
    harness = {
        "lm_eval_version": out.get("lm_eval_version") or _version("lm_eval"),
        "task_versions": {t: out.get("versions", {}).get(t) for t in leaves},
        "num_fewshot": {t: out.get("n-shot", {}).get(t) for t in leaves},
        "task_hashes": out.get("task_hashes", {}),
    }
    subscores = {
        t: float(results[t][benchmark.metric]) for t in leaves if t != task and benchmark.metric in results.get(t, {})
    }
    return BenchmarkRun(benchmark, metrics, n, samples, seconds, harness, subscores)


def _leaf_tasks(task: str, groups: dict[str, list[str]]) -> list[str]:
    if task not in groups:
        return [task]
    return [leaf for sub in groups[task] for leaf in _leaf_tasks(sub, groups)]


def _records(task: str, out: dict[str, Any], benchmark: Benchmark) -> list[dict[str, Any]]:
    """The per-example records of ``task`` in lm-eval's output. lm-eval logs each example once per filter
    (gsm8k: strict-match and flexible-extract): the primary metric's is kept."""
    kept = benchmark.metric.partition(",")[2] or "none"
    return [_record(task, s, benchmark) for s in out.get("samples", {}).get(task, []) if s.get("filter", kept) == kept]


def _record(task: str, sample: dict[str, Any], benchmark: Benchmark) -> dict[str, Any]:
    """One per-example trace: input, target, output, score (and per-choice log-likelihoods)."""
    args = [list(a.values()) if isinstance(a, dict) else list(a) for a in _as_list(sample["arguments"])]
    score_key = benchmark.metric.split(",")[0]
    prompt = args[0][0] if args else ""
    if isinstance(prompt, list | tuple) and len(prompt) == 1:
        prompt = prompt[0]  # a chat request: lm-eval's JsonChatStr, the JSON of the messages
    record: dict[str, Any] = {
        "task": task,
        "doc_id": sample["doc_id"],
        "input": prompt,
        "target": sample.get("target"),
        "score": sample.get(score_key),
    }
    cluster = benchmark.cluster  # the field of a doc that names its cluster (stats.py), if declared
    if cluster and isinstance(sample.get("doc"), dict) and cluster in sample["doc"]:
        record["cluster"] = sample["doc"][cluster]
    if benchmark.output == "multiple_choice":
        loglikelihoods = [float(r[0]) for r in _as_list(sample["filtered_resps"])]
        record["choices"] = [a[1] for a in args]
        record["loglikelihoods"] = loglikelihoods
        record["output"] = max(range(len(loglikelihoods)), key=loglikelihoods.__getitem__) if loglikelihoods else None
    else:
        record["output"] = _as_list(sample["filtered_resps"])[0]
        record["raw_output"] = _as_list(sample["resps"])[0][0] if sample.get("resps") else None
    return record


def _as_list(value: Any) -> list:
    return list(value.values()) if isinstance(value, dict) else list(value)


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)
