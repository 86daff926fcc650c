"""One benchmark split over N jobs (``settings.shards``), and the exact merge of their parts.

**Slicing.** Shard ``k`` of ``N`` evaluates rows ``k, k+N, k+2N, ...`` of each of the benchmark's lm-eval
tasks (every subtask of a group such as MMLU), among the first ``limit`` rows: the limit applies before the
split, as lm-eval's own data-parallel ranks split it (``islice(docs, rank, limit, world_size)``). Strided
slices are deterministic (a retry, and the request cache, see the same rows) and balanced when row lengths
drift along a file. The rows go to lm-eval as ``samples={task: range(...)}``.

**Partials.** A shard job records no leaderboard row: it writes, under
``<home>/shards/<project>/<model>/<benchmark>/<settings hash>-of-<N>/``, its per-example records
(``<k>.samples.jsonl``), every per-sample metric value of every filter (``<k>.values.jsonl``), then
``<k>.json`` (the job spec, the rows of each task, timing, versions): a shard with its ``.json`` is complete.

**Merge.** :func:`merge` reads the N parts, checks they are the N disjoint slices of the same rows, rebuilds
the benchmark's lm-eval tasks and groups and hands lm-eval's own result processing (each metric's
aggregation and ``stderr_for_metric``, then each group's aggregation) the per-sample values in row order: what
one job computes from the same values. It then records one row, bundle and W&B run and publishes, like a job.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from evaljobs.engine.catalog import Benchmark
from evaljobs.engine.errors import HarnessError
from evaljobs.engine.results import slug, write_json, write_jsonl
from evaljobs.engine.spec import JobSpec, Settings

BOOTSTRAP_ITERS = 1000  # what the harness gives lm-eval (stderr of metrics that are not means)
HEADER = re.compile(r"^(\d+)\.json$")


class ShardError(HarnessError):
    """The parts of a sharded benchmark cannot be merged (missing, mismatched or overlapping)."""


@dataclass
class Shard:
    """A shard job's part of one benchmark: which shard, each task's rows (after the limit), the values file."""

    index: int
    count: int
    rows: dict[str, int]  # lm-eval task -> rows of the benchmark's task (all shards)
    values: Iterable[list[Any]]  # [task, doc_id, filter, {metric: value}] of this shard's rows


def shard_problems(spec: JobSpec, benchmarks: list[Benchmark]) -> list[str]:
    """Why ``spec`` cannot run as a shard job (empty when it can, or is not sharded)."""
    settings = spec.settings
    if settings.shards == 1:
        return []
    problems = []
    if settings.shard is None:
        problems.append(
            f"settings.shard: a job with settings.shards = {settings.shards} evaluates one shard; give shard "
            f"0..{settings.shards - 1} (one job each), then merge their parts with `evaljobs merge`"
        )
    if inspect := [b.name for b in benchmarks if b.backend != "lm_eval"]:
        problems.append(f"settings.shards: {', '.join(inspect)} run on Inspect, which is not sharded; set shards to 1")
    return problems


def leaf_rows(benchmark: Benchmark, settings: Settings, manager: Any) -> dict[str, int]:
    """The rows each lm-eval task of ``benchmark`` evaluates (its size, or the limit), in lm-eval's order. A
    custom benchmark's size is known; a built-in's tasks are loaded to count them."""
    limit = settings.limit or None
    if benchmark.custom is not None and benchmark.size is not None:
        return {benchmark.name: min(benchmark.size, limit or benchmark.size)}
    loaded = load_tasks(benchmark, settings, manager)
    return {name: min(len(task.eval_docs), limit or len(task.eval_docs)) for name, task in loaded["tasks"].items()}


def rows_of(leaves: Mapping[str, int], shard: int, shards: int, benchmark: str) -> dict[str, range]:
    """Shard ``shard``'s rows of each task: every ``shards``-th row from row ``shard``."""
    picks = {leaf: range(shard, rows, shards) for leaf, rows in leaves.items()}
    if empty := [f"{leaf} ({leaves[leaf]} rows)" for leaf, rows in picks.items() if not rows]:
        raise HarnessError(
            f"benchmark {benchmark}: shard {shard} of {shards} has no row of {', '.join(empty)}; "
            f"use at most {min(leaves.values())} shards"
        )
    return picks


def load_tasks(benchmark: Benchmark, settings: Settings, manager: Any) -> dict[str, Any]:
    """lm-eval's tasks and groups of ``benchmark`` as a job builds them (few-shot count, as simple_evaluate sets
    it), loaded without a model."""
    from evaljobs.engine.harness import task_for

    groups = set(manager.all_groups) if benchmark.builtin else set()
    loaded = manager.load([task_for(benchmark, settings, groups)])
    for task in loaded["tasks"].values():
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
    return loaded


def sample_values(leaf: str, out: dict[str, Any]) -> Iterable[list[Any]]:
    """Every per-sample metric value lm-eval logged for ``leaf`` in ``out``, with its row and filter."""
    for sample in out.get("samples", {}).get(leaf, []):
        metrics = {m: _plain(sample[m]) for m in sample["metrics"]}
        yield [leaf, sample["doc_id"], sample["filter"], metrics]


def _plain(value: Any) -> Any:
    """``value`` as JSON holds it: numpy scalars as Python numbers, tuples as lists."""
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def parts_dir(home: Path, project: str, model: str, benchmark: str, settings: Settings) -> Path:
    """Where the N parts of ``benchmark`` evaluated with ``settings`` go (the same folder for every shard)."""
    name = f"{settings.score_hash()}-of-{settings.shards}"
    return home / "shards" / slug(project) / slug(model) / slug(benchmark) / name


def write_part(spec: JobSpec, model: str, artifact: str | None, run: Any, counted: dict, context: dict) -> str:
    """Write a shard job's part of ``run``'s benchmark; return its folder (what :func:`merge` reads): in the
    results home, or on its object store (``s3://.../shards/...``), where the three files are put too."""
    shard = run.shard
    home, project = spec.destination.results_home, spec.destination.project
    folder = parts_dir(home, project, model, run.benchmark.name, spec.settings)
    write_jsonl(folder / f"{shard.index}.samples.jsonl", run.samples)
    write_jsonl(folder / f"{shard.index}.values.jsonl", shard.values)
    header = {
        "shard": shard.index,
        "shards": shard.count,
        "benchmark": run.benchmark.name,
        "model": model,
        "artifact": artifact,
        "rows": shard.rows,
        "n_samples": run.n_samples,
        "seconds": run.seconds,
        "retries": run.retries,
        "counted": counted,
        "context": context,
        "harness": run.harness,
        "spec": spec.model_dump(mode="json"),
    }
    write_json(folder / f"{shard.index}.json", json.loads(json.dumps(header, default=str)))
    if url := spec.destination.results_url:
        from evaljobs.engine.objectstore import RemoteHome

        remote, key = RemoteHome(url, home), folder.relative_to(home).as_posix()
        for name in (f"{shard.index}.samples.jsonl", f"{shard.index}.values.jsonl", f"{shard.index}.json"):
            remote.put_file(f"{key}/{name}", folder / name)  # the header last: its presence means complete
        return f"{url}/{key}"
    return str(folder)


def pulled(folder: str | Path) -> Path:
    """The local folder of the parts at ``folder``: itself, or for an object-store folder
    (``<results URL>/shards/...``) its local copy, with the parts pulled from the store."""
    from evaljobs.engine import objectstore

    if not objectstore.is_url(str(folder)):
        return Path(folder).expanduser()
    home, found, rest = str(folder).rstrip("/").partition("/shards/")
    if not found:
        raise ShardError(f"{folder} is not a shard parts folder (<results URL>/shards/<project>/...)")
    remote = objectstore.RemoteHome(home)
    for key in remote.listing(f"shards/{rest}"):
        remote.get_file(key, Path(remote.local or "") / key)
    return Path(remote.local or "") / "shards" / rest


def read_parts(folder: Path) -> list[dict[str, Any]]:
    """The headers of the parts in ``folder``, by shard; refused unless they are the N parts of one evaluation."""
    folder = Path(folder).expanduser()
    found = sorted((int(m[1]), p) for p in folder.glob("*.json") if (m := HEADER.match(p.name)))
    if not found:
        raise ShardError(f"{folder} holds no shard part (<k>.json): is it the folder a shard job printed?")
    headers = [json.loads(p.read_text()) for _, p in found]
    count = headers[0]["shards"]
    if missing := sorted(set(range(count)) - {h["shard"] for h in headers}):
        raise ShardError(
            f"{folder}: {len(missing)} of {count} shards have not finished (shard {', '.join(map(str, missing))}): "
            "run them (their retries resume from the request cache), then merge"
        )
    first = _comparable(headers[0])
    for header in headers[1:]:
        if header["shards"] != count or _comparable(header) != first:
            raise ShardError(f"{folder}: shard {header['shard']} evaluated something else than shard 0 (its spec)")
    return headers


def _comparable(header: dict[str, Any]) -> Any:
    spec = header["spec"]
    settings = {k: v for k, v in spec["settings"].items() if k in Settings.SCORE_FIELDS or k == "shards"}
    return (header["benchmark"], header["model"], header["rows"], spec["model"], spec["benchmarks"], settings)


def merge(
    folder: str | Path,
    secrets: Mapping[str, str] | None = None,
    log: Callable[[str], None] = print,
    publish: bool | None = None,
) -> Any:
    """Merge the N parts in ``folder`` into one result: one row, bundle and W&B run; the leaderboard published
    unless ``publish`` (default: the shard jobs' ``publish_leaderboard``) says not to. Returns a
    :class:`~evaljobs.engine.job.JobResult`."""
    from evaljobs.engine import hub, job, preflight, tracking
    from evaljobs.engine.harness import RecordsFile, _collect, _leaf_tasks
    from evaljobs.engine.results import ResultsStore

    folder = pulled(folder)
    headers = read_parts(folder)
    first = headers[0]
    data = first["spec"]
    data["settings"] = data["settings"] | {"shard": None}
    if url := data["destination"].get("results_url"):  # this machine's local copy of the store
        data["destination"] = {k: v for k, v in data["destination"].items() if k != "results_url"}
        data["destination"]["results_home"] = url
    data["job_id"] = f"{data['job_id'][:55]}-merged"
    if publish is not None:
        data["destination"] = data["destination"] | {"publish_leaderboard": publish}
    spec = JobSpec.parse(data)
    home, project = spec.destination.results_home, spec.destination.project
    [benchmark] = preflight.load_benchmarks([first["benchmark"]], spec.datasets.mirror, spec.settings.backend)
    target = job.wandb_target(spec, secrets)
    log(f"merging the {len(headers)} shards of {benchmark.name} ({first['model']}) from {folder}")
    mirror_cache = home / "jobs" / spec.job_id / "datasets" if spec.datasets.mirror else None
    with hub.environment(TQDM_DISABLE="1"), hub.datasets_cache(mirror_cache):
        out = _processed(folder, headers, benchmark, spec.settings)
    out["lm_eval_version"] = first["harness"].get("lm_eval_version")
    order = {leaf: i for i, leaf in enumerate(_leaf_tasks(benchmark.task or benchmark.name, out["group_subtasks"]))}
    records = RecordsFile(home / "jobs" / spec.job_id / "spool")
    records.extend(sorted(_lines(folder, headers, "samples"), key=lambda r: (order.get(r["task"], 0), r["doc_id"])))
    run = _collect(benchmark, out, max(h["seconds"] for h in headers), records)
    run.together = [benchmark.name]
    run.retries = _summed(h["retries"] for h in headers)
    counted = _summed(h["counted"] for h in headers)
    checked = SimpleNamespace(model_name=first["model"], artifact=first["artifact"])
    with tracking.session(home / "wandb") if target.mode != "disabled" else _nothing():
        row = job._record(ResultsStore(home), spec, checked, run, counted, first["context"])
        log(f"    {benchmark.name}: {benchmark.metric} = {run.score:.4f} on {run.n_samples} examples (merged)")
        runs = {}
        if target.mode != "disabled":
            runs[benchmark.name] = tracked = tracking.log_evaluation(
                Path(row.bundle), home, target, model_artifact=first["artifact"]
            )
            log(f"    W&B run {tracked.id}: {tracked.url or tracking.sync_command(tracked)}")
        published = job.published_home(spec)
        board, report = job.publish(project, published, target, log, write=spec.destination.publish_leaderboard)
    return job.JobResult(spec, [row], board, runs, report)


def _nothing() -> Any:
    from contextlib import nullcontext

    return nullcontext()


def _processed(folder: Path, headers: list[dict], benchmark: Benchmark, settings: Settings) -> dict[str, Any]:
    """lm-eval's results of the whole benchmark from the parts' per-sample values, in row order."""
    from lm_eval.evaluator_utils import _process_results
    from lm_eval.tasks import TaskManager

    loaded = load_tasks(benchmark, settings, TaskManager(include_defaults=benchmark.builtin))
    rows, count = headers[0]["rows"], headers[0]["shards"]
    if sorted(loaded["tasks"]) != sorted(rows):
        tasks = sorted(loaded["tasks"])
        raise ShardError(f"{folder}: the shards evaluated tasks {sorted(rows)}, the benchmark has {tasks}")
    by_task: dict[str, dict[str, list[tuple[int, dict]]]] = {leaf: {} for leaf in rows}
    for leaf, doc_id, filter_key, metrics in _lines(folder, headers, "values"):
        by_task[leaf].setdefault(filter_key, []).append((doc_id, metrics))
    accumulated = {}
    for name, task in loaded["tasks"].items():
        raw: dict[tuple[str, str], list[Any]] = {}
        for filter_key, values in by_task[name].items():
            values.sort(key=lambda v: v[0])
            if [v[0] for v in values] != list(range(rows[name])):
                raise ShardError(
                    f"{folder}: the {count} shards' rows of {name} (filter {filter_key}) are not rows "
                    f"0..{rows[name] - 1} once each"
                )
            for _, metrics in values:
                for metric, value in metrics.items():
                    raw.setdefault((metric, filter_key), []).append(value)
        accumulated[name] = {"task": task, "raw_metrics": raw, "logged_samples": []}
    return _process_results(accumulated, loaded["groups"], BOOTSTRAP_ITERS)._to_eval_results()


def _lines(folder: Path, headers: list[dict], kind: str) -> Iterable[dict[str, Any]]:
    for header in headers:
        with (folder / f"{header['shard']}.{kind}.jsonl").open(encoding="utf-8") as f:
            yield from map(json.loads, f)


def _summed(counts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for count in counts:
        for key, value in (count or {}).items():
            if isinstance(value, (int, float)):
                total[key] = total.get(key, 0) + value
    return total


def run_merge(
    folders: list[str],
    secrets: Mapping[str, str] | None = None,
    publish: bool | None = None,
    log: Any = None,
    started: Callable[[Any], None] | None = None,
) -> list[dict[str, Any]]:
    """``evaljobs merge`` of ``folders`` as a child process (lm-eval stays out of this one), its lines relayed to
    ``log`` as :func:`evaljobs.engine.command.run_local` relays a job's; the merged jobs' summaries."""
    import logging
    import os
    import sys
    import tempfile

    from evaljobs.engine.command import _run

    log = log or logging.getLogger(__name__)
    with tempfile.TemporaryDirectory(prefix="evaljobs-merge-") as work:
        summary = Path(work) / "summary.json"
        command = [sys.executable, "-m", "evaljobs.cli", "merge", *map(str, folders), "--summary-out", str(summary)]
        if publish is not None:
            command.append("--publish-leaderboard" if publish else "--no-publish-leaderboard")
        if code := _run(command, {**os.environ, **(secrets or {})}, log, started):
            raise HarnessError(f"merging {', '.join(map(str, folders))} failed (evaljobs merge exited with {code})")
        merged = json.loads(summary.read_text())
    return merged if isinstance(merged, list) else [merged]
