"""One evaluation job: preflight -> serve -> evaluate each benchmark -> record -> leaderboard."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from evaljobs import __version__
from evaljobs.engine import leaderboard, preflight, serving
from evaljobs.engine.errors import HarnessError
from evaljobs.engine.harness import BenchmarkRun, Endpoint, Harness
from evaljobs.engine.modelprep import ModelFolder
from evaljobs.engine.results import ResultRow, ResultsStore, write_json, write_jsonl
from evaljobs.engine.spec import JobSpec


@dataclass
class JobResult:
    spec: JobSpec
    rows: list[ResultRow]
    leaderboard: leaderboard.Leaderboard

    def summary(self) -> dict[str, Any]:
        """A small, secret-free summary (what an Airflow task returns to XCom)."""
        return {
            "job_id": self.spec.job_id,
            "project": self.spec.destination.project,
            "model": self.spec.model.display_name,
            "scores": {r.benchmark: r.score for r in self.rows},
            "metrics": {r.benchmark: r.metric for r in self.rows},
            "bundles": {r.benchmark: r.bundle for r in self.rows},
            "results_home": str(self.spec.destination.results_home),
        }


def run_job(spec: JobSpec, secrets: Mapping[str, str] | None = None, log: Callable[[str], None] = print) -> JobResult:
    """Run ``spec`` end to end. Every finished benchmark is recorded at once, so a failure keeps them."""
    checked = preflight.run(spec, secrets)
    home = spec.destination.results_home
    store = ResultsStore(home)
    workdir = home / "jobs" / spec.job_id
    rows, failures = [], []
    with _endpoint(spec, checked, workdir, log) as (endpoint, server):
        harness = Harness(endpoint, spec.settings, home / "cache" / model_key(spec, checked.folder))
        ours = not spec.model.hosted  # a vLLM server: ours, or one serving this checkpoint for the DAG
        versions = {"evaljobs": __version__, "vllm": server_version(endpoint) if ours else None}
        for number, benchmark in enumerate(checked.benchmarks, 1):
            log(
                f"[{number}/{len(checked.benchmarks)}] {benchmark.name} ({benchmark.output}, metric {benchmark.metric})"
            )
            served_before = requests_served(endpoint) if ours else None
            try:
                run = harness.run(benchmark)
            except HarnessError as exc:
                if server and not server.alive():
                    exc = HarnessError(f"{exc}\nvLLM died; last lines of {server.log_path}:\n{server.log_tail()}")
                failures.append(str(exc))
                log(f"    FAILED: {exc}")
                continue
            sent = requests_served(endpoint) - served_before if ours else None
            rows.append(_record(store, spec, run, sent, versions))
            log(
                f"    {benchmark.metric} = {run.score:.4f} on {run.n_samples} examples in {run.seconds:.1f} s"
                + (f", {sent} requests answered by the server" if sent is not None else "")
            )
    board = leaderboard.build(spec.destination.project, store.rows(spec.destination.project))
    if failures:
        raise HarnessError(
            f"{len(failures)} of {len(checked.benchmarks)} benchmarks failed (finished ones are "
            f"recorded under {home}):\n" + "\n".join(failures)
        )
    return JobResult(spec, rows, board)


@contextmanager
def _endpoint(
    spec: JobSpec, checked: preflight.Checked, workdir: Path, log: Callable[[str], None]
) -> Iterator[tuple[Endpoint, serving.Server | None]]:
    """The endpoint to evaluate: a vLLM server started (and always stopped) here, or the hosted one."""
    model, resources = spec.model, spec.resources
    if model.hosted:
        yield Endpoint(model.base_url, model.model, model.api, None, checked.api_key, resources.max_model_len), None
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
        )
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
        )


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


def requests_served(endpoint: Endpoint) -> int:
    """Requests vLLM has finished so far, from its Prometheus metrics."""
    text = httpx.get(endpoint.base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    return int(
        sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("vllm:request_success_total")
        )
    )


def server_version(endpoint: Endpoint) -> str | None:
    try:
        return httpx.get(endpoint.base_url.removesuffix("/v1") + "/version", timeout=10).json().get("version")
    except (httpx.HTTPError, ValueError):
        return None


def _record(
    store: ResultsStore, spec: JobSpec, run: BenchmarkRun, sent: int | None, versions: dict[str, Any]
) -> ResultRow:
    benchmark, settings, project = run.benchmark, spec.settings, spec.destination.project
    model = spec.model.display_name
    bundle = store.bundle_dir(project, model, benchmark.name, settings.score_hash())
    write_jsonl(bundle / "samples.jsonl", run.samples)
    metrics = {
        "job_id": spec.job_id,
        "project": project,
        "model": spec.model.model_dump(exclude_none=True, exclude=None if spec.model.hosted else {"api"})
        | {"name": model},
        "benchmark": benchmark.model_dump(include={"name", "category", "output", "metric", "baseline", "task"})
        | {"custom": str(benchmark.custom) if benchmark.custom else None},
        "score": run.score,
        "metrics": run.metrics,
        "n_samples": run.n_samples,
        "settings": settings.model_dump(),
        "settings_hash": settings.score_hash(),
        "resources": spec.resources.model_dump(),
        "timing": {
            "seconds": round(run.seconds, 3),
            "requests_answered_by_server": sent,
            "requests_per_second": round(sent / run.seconds, 3) if sent and run.seconds else None,
        },
        "versions": versions | {"lm_eval": run.harness["lm_eval_version"]},
        "harness": run.harness,
    }
    write_json(bundle / "metrics.json", json.loads(json.dumps(metrics, default=str)))
    return store.record(
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
        )
    )
