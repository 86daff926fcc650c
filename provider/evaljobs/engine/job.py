"""One evaluation job: preflight -> serve -> evaluate each benchmark -> record -> leaderboard."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from evaljobs import __version__
from evaljobs.engine import cachecopy, hub, leaderboard, objectstore, preflight, serving, tracking
from evaljobs.engine.catalog import Benchmark
from evaljobs.engine.errors import EvalJobsError, HarnessError, SpecError
from evaljobs.engine.harness import BenchmarkRun, Endpoint, Harness, Uncached
from evaljobs.engine.modelprep import ModelFolder
from evaljobs.engine.results import ResultRow, ResultsStore, slug, write_json, write_jsonl
from evaljobs.engine.shards import shard_problems, write_part
from evaljobs.engine.spec import JobSpec

CACHE_ONLY = "http://cache-only.invalid/v1"  # the endpoint of a harness that answers from its cache alone
COUNTERS = {
    "requests": "vllm:request_success_total",
    "tokens_in": "vllm:prompt_tokens_total",
    "tokens_out": "vllm:generation_tokens_total",
}


@dataclass
class JobResult:
    spec: JobSpec
    rows: list[ResultRow]
    leaderboard: leaderboard.Leaderboard
    runs: dict[str, tracking.TrackedRun] = field(default_factory=dict)
    report: Path | None = None
    parts: dict[str, str] = field(default_factory=dict)  # a shard job's: benchmark -> its parts' folder

    def summary(self) -> dict[str, Any]:
        """A small, secret-free summary (what an Airflow task returns to XCom), with the model's best leaderboard
        row."""
        model = self.rows[0].model if self.rows else self.spec.model.display_name
        return {
            "job_id": self.spec.job_id,
            "project": self.spec.destination.project,
            "model": model,
            "leaderboard_row": next((r for r in self.leaderboard.as_dict()["rows"] if r["model"] == model), None),
            "scores": {r.benchmark: r.score for r in self.rows},
            "metrics": {r.benchmark: r.metric for r in self.rows},
            "bundles": {r.benchmark: r.bundle for r in self.rows},
            "wandb_runs": {b: {"id": r.id, "offline": r.offline, "url": r.url} for b, r in self.runs.items()},
            "report": str(self.report) if self.report else None,
            "results_home": published_home(self.spec),
            "shard_parts": self.parts,
        }


def published_home(spec: JobSpec) -> str:
    """Where the job's results are kept: the object-store URL, or the local results home."""
    return spec.destination.results_url or str(spec.destination.results_home)


def wandb_target(spec: JobSpec, secrets: Mapping[str, str] | None) -> tracking.WandbTarget:
    """Where and how runs are logged: the key is the ``WANDB_API_KEY`` secret, never the process environment
    of the caller (``evaljobs run`` receives it in its own environment)."""
    dest = spec.destination
    return tracking.WandbTarget.from_env(os.environ if secrets is None else secrets, dest.wandb, dest.wandb_host)


def say(message: str) -> None:
    """A job's line on stdout, written at once: a task log or a pod's log shows it as it happens."""
    print(message, flush=True)


def run_job(spec: JobSpec, secrets: Mapping[str, str] | None = None, log: Callable[[str], None] = say) -> JobResult:
    """Run ``spec`` end to end. Every finished benchmark is recorded at once, so a failure keeps them.

    The libraries' progress bars are off (the harness logs progress lines instead): they read these variables
    when first imported, which in ``evaljobs run`` is during the job."""
    target = wandb_target(spec, secrets)
    checked = preflight.run(spec, secrets, target)
    home = spec.destination.results_home
    # One W&B session for the job: its runs and the leaderboard run share one service process.
    with (
        hub.environment(TQDM_DISABLE="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1"),
        tracking.session(home / "wandb") if target.mode != "disabled" else nullcontext(),
    ):
        return _run_checked(spec, checked, target, log)


def answered_by_cache(spec: JobSpec, log: Callable[[str], None] = say) -> bool:
    """Whether the request cache holds every request of ``spec`` (a checkpoint it would serve), so that the job
    runs with no server: the job's own evaluation with no server behind it (:func:`from_cache`), its results
    not recorded. False when the job cannot get that far (preflight refuses it): the job says why."""
    try:
        checked = preflight.run(spec, {}, tracking.WandbTarget.from_env({}, "disabled", None))
    except EvalJobsError as exc:
        log(f"the job cannot be checked against the request cache ({type(exc).__name__}); the server is started")
        return False
    cache = spec.destination.results_home / "cache" / model_key(spec, checked.folder)
    if url := cachecopy.store_url(spec.destination.results_url):  # a fresh pod's disk: what the store holds first
        cachecopy.restore(cachecopy.segments_url(url, cache.name), cache)
    mirror_cache = spec.destination.results_home / "jobs" / spec.job_id / "datasets" if spec.datasets.mirror else None
    with (
        hub.environment(TQDM_DISABLE="1", HF_DATASETS_DISABLE_PROGRESS_BARS="1"),
        hub.datasets_cache(mirror_cache),
    ):
        return from_cache(spec, checked, cache, log) is not None


def _run_checked(
    spec: JobSpec, checked: preflight.Checked, target: tracking.WandbTarget, log: Callable[[str], None]
) -> JobResult:
    home, project = spec.destination.results_home, spec.destination.project
    store = ResultsStore(home)
    workdir = home / "jobs" / spec.job_id
    rows, runs, failures, parts = [], {}, [], {}
    if problems := shard_problems(spec, checked.benchmarks):
        raise SpecError(problems)
    mirror_cache = workdir / "datasets" if spec.datasets.mirror else None
    cache = home / "cache" / model_key(spec, checked.folder)
    with (
        hub.environment(HF_TOKEN=checked.hf_token),
        hub.datasets_cache(mirror_cache),
        # an object-store results home: its copy of the request cache restored first, new answers copied
        cachecopy.copying(
            cachecopy.store_url(spec.destination.results_url or home),
            cache,
            cache.name,
            spec.job_id,
            spec.settings.cache_copy_answers,
            spec.settings.cache_copy_seconds,
            log,
        ) as copy,
        _endpoint(spec, checked, workdir, cache, log) as (endpoint, server, answered),
    ):
        harnesses = _harnesses(spec, checked, endpoint, server, cache, workdir, log, copy) if endpoint else []
        # a vLLM server: ours, or one serving this checkpoint for the DAG (none when the cache answered all)
        ours = endpoint is not None and not spec.model.hosted
        context = {
            "versions": {"evaljobs": __version__, "vllm": server_version(endpoint) if ours else None},
            "server": {"args": server.process.args[3:]} if server else None,
            "hardware": hardware(spec),
        }
        total = len(checked.benchmarks)
        for number, benchmark in enumerate(checked.benchmarks, 1):
            log(f"[{number}/{total}] {benchmark.name} ({benchmark.output}, metric {benchmark.metric})")
        if total > 1:
            log(f"evaluating the {total} benchmarks together: their requests share the server")
        before = _counters(endpoint) if ours else None
        evaluated = (o for harness, benchmarks in harnesses for o in harness.evaluate(benchmarks))
        for outcomes in evaluated if answered is None else answered:
            after = _counters(endpoint) if ours else None
            counted = _delta(after, before) if after and before else {}
            counted = dict.fromkeys(COUNTERS, 0) if answered else counted
            before = after
            finished = [o for o in outcomes if not isinstance(o, HarnessError)]
            for error in (o for o in outcomes if isinstance(o, HarnessError)):
                if problem := hub.access_problem(error, checked.benchmarks, spec.datasets.hf_token_secret):
                    error = HarnessError(problem)
                if server and not server.alive():
                    error = HarnessError(f"{error}\nvLLM died; last lines of {server.log_path}:\n{server.log_tail()}")
                failures.append(str(error))
                log(f"    FAILED: {error}")
            for run in (r for r in finished if r.shard is not None):  # a shard's part: no row (evaljobs merge)
                model = checked.model_name or spec.model.display_name
                folder = write_part(spec, model, checked.artifact, run, counted, context)
                parts[run.benchmark.name] = str(folder)
                shard = f"shard {run.shard.index + 1}/{run.shard.count}"
                log(f"    {run.benchmark.name} {shard}: {run.n_samples} examples; its part: {folder} (evaljobs merge)")
            finished = [r for r in finished if r.shard is None]
            for run in finished:
                row = _record(store, spec, checked, run, counted, context)
                rows.append(row)
                log(f"    {run.benchmark.name}: {run.benchmark.metric} = {run.score:.4f} on {run.n_samples} examples")
                if target.mode != "disabled":
                    try:
                        runs[run.benchmark.name] = tracked = tracking.log_evaluation(
                            Path(row.bundle), home, target, model_artifact=checked.artifact
                        )
                    except Exception as exc:  # W&B down or refusing: the local result stays, a retry logs again
                        failures.append(
                            f"benchmark {run.benchmark.name}: logging to W&B failed: {type(exc).__name__}: {exc}"
                        )
                        log(f"    W&B logging FAILED: {exc}")
                    else:
                        log(f"    W&B run {tracked.id}: {tracked.url or tracking.sync_command(tracked)}")
            if finished:
                names = " + ".join(r.benchmark.name for r in finished)
                log(
                    f"    {names}: on {sum(r.n_samples for r in finished)} examples in {finished[0].seconds:.1f} s"
                    + (f", {counted['requests']} requests answered by the server" if counted else "")
                )
    if rows:
        board, report_path = publish(
            project, published_home(spec), target, log, write=spec.destination.publish_leaderboard
        )
    else:
        board, report_path = leaderboard.build(project, objectstore.project_rows(published_home(spec), project)), None
    if failures:
        raise HarnessError(
            f"{len(failures)} of {len(checked.benchmarks)} benchmarks failed (finished ones are "
            f"recorded under {home}):\n" + "\n".join(failures)
        )
    if runs and any(r.offline for r in runs.values()):
        log(f"W&B runs were written offline under {home / 'wandb'}: upload each with the `wandb sync` line above")
    return JobResult(spec, rows, board, runs, report_path, parts)


def _harnesses(
    spec: JobSpec,
    checked: preflight.Checked,
    endpoint: Endpoint,
    server: serving.Server | None,
    cache: Path,
    workdir: Path,
    log: Callable[[str], None],
    copy: cachecopy.CacheCopy | None = None,
) -> list[tuple[Any, list[Benchmark]]]:
    """Each backend's harness with its benchmarks: lm-eval's first, then Inspect's (``copy``: where lm-eval's
    harness hands its answers, to be copied to the object store)."""
    mirror = spec.datasets.mirror
    lm_eval = [b for b in checked.benchmarks if b.backend == "lm_eval"]
    inspect = [b for b in checked.benchmarks if b.backend == "inspect"]
    harnesses: list[tuple[Any, list[Benchmark]]] = []
    if lm_eval:
        alive = server.alive if server else None
        harnesses.append((Harness(endpoint, spec.settings, cache, alive, mirror, log, copy=copy), lm_eval))
    if inspect:
        from evaljobs.engine.inspect_harness import InspectHarness, Judge

        judge = spec.judge
        prices = (judge.usd_per_million_input, judge.usd_per_million_output)
        prices = None if None in prices else prices
        grader = Judge(judge.base_url, judge.model, checked.judge_key, prices)
        if spec.judged_by_model_under_test:  # allowed by preflight only when the job says so
            grader = Judge(endpoint.base_url, endpoint.model, endpoint.api_key, prices)
        harness = InspectHarness(endpoint, spec.settings, cache, workdir / "inspect", grader, mirror)
        harnesses.append((harness, inspect))
    return harnesses


def publish(
    project: str,
    results_home: Path | str,
    target: tracking.WandbTarget,
    log: Callable[[str], None] = print,
    write: bool = True,
) -> tuple[leaderboard.Leaderboard, Path | None]:
    """The project's leaderboard (local results, plus the W&B project's runs when online); with ``write``,
    also saved as JSON/CSV, logged to the project's leaderboard run and rendered as the HTML report, under the
    project's publishing lock (jobs that finish at once take turns, so the last one publishes every row).

    A results home on object storage (a URL) has no lock: the rows are pulled from the store, the outputs
    written to its local copy and pushed, and rebuilt while the rows change (:mod:`objectstore` says why)."""
    if remote := objectstore.RemoteHome.of(results_home):
        local = Path(remote.local or "")
        return remote.publish(project, lambda rows: _publish_rows(project, local, rows, target, log, write), write, log)
    home = Path(results_home)
    with leaderboard.publishing(project, home) if write else nullcontext():
        return _publish_rows(project, home, ResultsStore(home).rows(project), target, log, write)


def _publish_rows(
    project: str,
    results_home: Path,
    rows: list[ResultRow],
    target: tracking.WandbTarget,
    log: Callable[[str], None],
    write: bool,
) -> tuple[leaderboard.Leaderboard, Path | None]:
    """The leaderboard of ``rows``; with ``write``, its files, W&B run and report under ``results_home``."""
    from evaljobs.engine import report

    if target.mode != "disabled" and not target.offline:
        rows = merge_rows(tracking.fetch_rows(project, target), rows)
    board = leaderboard.build(project, rows)
    if not write:
        return board, None
    leaderboard.write(board, results_home)
    if target.mode != "disabled":
        tracked = tracking.log_leaderboard(board.as_dict(), results_home, target)
        log(f"leaderboard run {tracked.id}: {tracked.url or tracking.sync_command(tracked)}")
    path = report.write_report(
        project, results_home, results_home / "reports" / slug(project), rows=rows, pngs=False, board=board
    )
    log(f"report: {path}")
    return board, path


def merge_rows(remote: list[ResultRow], local: list[ResultRow]) -> list[ResultRow]:
    """The project's rows from W&B and from the local store; for the same key the newer wins (oldest first)."""
    merged: dict[tuple[str, str, str], ResultRow] = {}
    for row in sorted([*remote, *local], key=lambda r: r.recorded_at):
        merged[(row.model, row.benchmark, row.settings_hash)] = row
    return list(merged.values())


@contextmanager
def _endpoint(
    spec: JobSpec, checked: preflight.Checked, workdir: Path, cache: Path, log: Callable[[str], None]
) -> Iterator[tuple[Endpoint | None, serving.Server | None, list[list[BenchmarkRun]] | None]]:
    """The endpoint to evaluate: a vLLM server started (and always stopped) here, or the hosted one; or, when
    the request cache answers every request of a checkpoint this job would serve, no endpoint and the
    outcomes (see :func:`from_cache`)."""
    model, resources = spec.model, spec.resources
    if model.hosted:
        yield (
            Endpoint(model.base_url, model.model, model.api, None, checked.api_key, resources.max_model_len),
            None,
            None,
        )
        return
    if model.endpoint:
        yield (
            Endpoint(
                model.endpoint,
                model.display_name,
                "completions",
                str(checked.folder.path),
                None,
                resources.max_model_len,
            ),
            None,
            None,
        )
        return
    if (answered := from_cache(spec, checked, cache, log)) is not None:
        yield None, None, answered
        return
    log(f"starting vLLM for {model.checkpoint} (log: {workdir / 'vllm.log'})")
    started = time.monotonic()
    with serving.start(checked.folder.path, model.display_name, resources, workdir) as server:
        log(f"vLLM ready at {server.base_url} in {time.monotonic() - started:.0f} s")
        yield (
            Endpoint(
                server.base_url, server.model, "completions", str(checked.folder.path), None, resources.max_model_len
            ),
            server,
            None,
        )


def from_cache(
    spec: JobSpec, checked: preflight.Checked, cache: Path, log: Callable[[str], None]
) -> list[list[BenchmarkRun]] | None:
    """The outcomes of every benchmark when the request cache holds each request they make, evaluated with no
    server; None (start the server) as soon as one request is missing, for a benchmark lm-eval does not run,
    or when a benchmark fails (evaluated with the server, it fails with the server's side of the story)."""
    if not (cache / "requests_rank0.db").is_file() or any(b.backend != "lm_eval" for b in checked.benchmarks):
        return None
    folder, resources = str(checked.folder.path), spec.resources
    endpoint = Endpoint(CACHE_ONLY, spec.model.display_name, "completions", folder, None, resources.max_model_len)
    harness = Harness(endpoint, spec.settings, cache, mirror=spec.datasets.mirror, log=log, cache_only=True)
    log("looking for every request in the request cache first")
    try:
        answered = list(harness.evaluate(checked.benchmarks))
    except Uncached as missing:
        log(f"{missing}: the server is needed")
        return None
    if any(isinstance(o, HarnessError) for outcomes in answered for o in outcomes):
        return None
    log("every request is in the request cache: no server started")
    return answered


def model_key(spec: JobSpec, folder: ModelFolder | None) -> str:
    """Identity of the model for the request cache: the hosted endpoint + name, or the folder's content."""
    model = spec.model
    if model.hosted:
        ident = f"{model.base_url}|{model.model}"
    else:
        path = folder.path.expanduser().resolve()
        files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
        ident = f"{path}|{files}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def server_counters(endpoint: Endpoint) -> dict[str, int]:
    """vLLM's request and token counters so far (its Prometheus metrics), summed over label sets."""
    text = httpx.get(endpoint.base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    values = dict.fromkeys(COUNTERS, 0.0)
    for line in text.splitlines():
        for key, metric in COUNTERS.items():
            if line.startswith((metric + "{", metric + " ")):
                values[key] += float(line.rsplit(" ", 1)[1])
    return {k: int(v) for k, v in values.items()}


def _counters(endpoint: Endpoint) -> dict[str, int] | None:
    """The server's counters, or None when it cannot tell (it died: the failure says why)."""
    try:
        return server_counters(endpoint)
    except httpx.HTTPError:
        return None


def requests_served(endpoint: Endpoint) -> int:
    """Requests vLLM has finished so far."""
    return server_counters(endpoint)["requests"]


def _delta(after: dict[str, int], before: dict[str, int] | None) -> dict[str, int]:
    return {k: v - (before or {}).get(k, 0) for k, v in after.items()}


def hardware(spec: JobSpec) -> dict[str, Any]:
    """Where the job ran (for the run's config): the server's GPUs, this machine's CPUs and platform."""
    return {
        "gpus": spec.resources.gpus,
        "cpus": os.cpu_count(),
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
    }


def server_version(endpoint: Endpoint) -> str | None:
    try:
        return httpx.get(endpoint.base_url.removesuffix("/v1") + "/version", timeout=10).json().get("version")
    except (httpx.HTTPError, ValueError):
        return None


def _intervals(run: BenchmarkRun) -> dict[str, Any]:
    """The 95 % CIs of the score and of its normalised score (the leaderboard's), from the per-example scores."""
    from evaljobs.engine import stats

    b = run.benchmark.baseline
    normalised = leaderboard.normalised_of(run.score, b, run.subscores)
    score, norm = stats.normalised_ci(run.samples, run.score, b, run.subscores, normalised)
    return {"level": stats.LEVEL, "score": score and score.as_dict(), "normalised": norm and norm.as_dict()}


def _record(
    store: ResultsStore,
    spec: JobSpec,
    checked: preflight.Checked,
    run: BenchmarkRun,
    counted: dict[str, int],
    context: dict[str, Any],
) -> ResultRow:
    from evaljobs.engine.report import write_examples

    benchmark, settings, project = run.benchmark, spec.settings, spec.destination.project
    model = checked.model_name or spec.model.display_name
    bundle = store.bundle_dir(project, model, benchmark.name, settings.score_hash())
    write_jsonl(bundle / "samples.jsonl", run.samples)
    write_examples(bundle, run.samples)  # the report's drill-down reads these instead of every sample
    source = spec.model.model_dump(exclude_none=True, exclude=None if spec.model.hosted else {"api"})
    requests = counted.get("requests")
    metrics = {
        "job_id": spec.job_id,
        "project": project,
        "model": source | {"name": model} | ({"artifact": checked.artifact} if checked.artifact else {}),
        "benchmark": benchmark.model_dump(
            include={"name", "category", "output", "metric", "baseline", "task", "inspect", "backend"}
        )
        | {"custom": str(benchmark.custom) if benchmark.custom else None},
        "score": run.score,
        "metrics": run.metrics,
        "subscores": run.subscores,
        "n_samples": run.n_samples,
        "ci": _intervals(run),
        "settings": settings.model_dump(),
        "settings_hash": settings.score_hash(),
        "resources": spec.resources.model_dump(),
        "timing": {
            "evaluated_with": run.together,  # seconds, requests, tokens and retries are these benchmarks' together
            "seconds": round(run.seconds, 3),
            "requests_answered_by_server": requests,
            "requests_per_second": round(requests / run.seconds, 3) if requests and run.seconds else None,
            "tokens_in": counted.get("tokens_in"),
            "tokens_out": counted.get("tokens_out"),
            "retries": run.retries.get("total", 0),
            "retries_by_reason": {k: v for k, v in run.retries.items() if k != "total"},
        },
        "versions": context["versions"]
        | {key.removesuffix("_version"): value for key, value in run.harness.items() if key.endswith("_version")},
        "server": context["server"],
        "hardware": context["hardware"],
        "harness": run.harness,
    }
    write_json(bundle / "metrics.json", json.loads(json.dumps(metrics, default=str)))
    row = store.record(
        ResultRow(
            project=project,
            model=model,
            benchmark=benchmark.name,
            settings_hash=settings.score_hash(),
            job_id=spec.job_id,
            category=benchmark.category,
            metric=benchmark.metric,
            score=run.score,
            baseline=benchmark.baseline,
            n_samples=run.n_samples,
            metrics=run.metrics,
            bundle=str(bundle),
            settings={k: v for k, v in settings.model_dump().items() if k in settings.SCORE_FIELDS},
            subscores=run.subscores,
        )
    )
    if spec.destination.results_url:  # the store is the record: the row and its bundle go there at once
        objectstore.RemoteHome(spec.destination.results_url, store.home).push_result(row)
    return row
