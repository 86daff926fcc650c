"""Tracking in W&B: one run per (model, benchmark), grouped by job; the project's leaderboard run; model
artifacts; and rebuilding result rows from a project's runs.

Credentials travel in ``wandb.Settings`` / ``wandb.Api`` arguments, never through ``os.environ``. Without an
API key runs are written offline under ``<results home>/wandb`` (upload them with ``wandb sync``). Every
call runs in a wandb session of its own whose files stay under the results home (see :func:`session`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from evaljobs.engine.errors import PreflightError
from evaljobs.engine.modelprep import check_folder
from evaljobs.engine.results import ResultRow
from evaljobs.engine.spec import Settings

TABLE_ROWS = 10_000  # rows of one logged Table: W&B truncates files of bigger ones
SECRET_WORDS = {"key", "apikey", "token", "secret", "password", "passwd"}
# Summary keys that are not lm-eval metrics (a metric whose short name is one of these keeps its ",none").
SUMMARY_FIELDS = {
    "score",
    "n_samples",
    "wall_seconds",
    "requests_per_second",
    "tokens_in",
    "tokens_out",
    "recorded_at",
    "subscores",
}
ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
PROJECT_NAME = re.compile(r"[^/\\#?%:]{1,128}")
# wandb 0.31 has no settings for these folders: it reads them from the environment (the service process
# inherits them when it starts), so :func:`session` sets them for its duration only.
ENV_DIRS = {"WANDB_CONFIG_DIR": "config", "WANDB_CACHE_DIR": "cache", "WANDB_DATA_DIR": "data"}
_SESSION_LOCK = threading.RLock()
_session_depth = 0  # sessions entered by the thread holding the lock


@dataclass(frozen=True)
class WandbTarget:
    """Where runs go: ``host`` is a dedicated/self-hosted W&B base URL; ``auto`` is online with a key."""

    api_key: str | None = field(default=None, repr=False)
    host: str | None = None
    entity: str | None = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"

    @property
    def offline(self) -> bool:
        return self.mode == "offline" or (self.mode == "auto" and not self.api_key)

    @classmethod
    def from_env(cls, env: Mapping[str, str], mode: str = "auto", host: str | None = None) -> WandbTarget:
        """The target of a process given ``WANDB_API_KEY``, ``WANDB_BASE_URL`` and ``WANDB_ENTITY`` (its
        environment, or the secrets handed to it); ``host`` overrides the base URL. The one place that reads
        them: the CLI and jobs build their target here, Airflow's :class:`~evaljobs.hooks.wandb.WandbHook`
        hands them over as that environment."""
        host = host or env.get("WANDB_BASE_URL") or None
        return cls(env.get("WANDB_API_KEY") or None, host, env.get("WANDB_ENTITY") or None, mode)


@dataclass(frozen=True)
class TrackedRun:
    """A logged run; ``path`` is its local folder (None when W&B is disabled), ``url`` is set online."""

    id: str
    project: str
    entity: str | None
    offline: bool
    path: Path | None
    url: str | None


def run_id(project: str, model: str, benchmark: str, settings_hash: str) -> str:
    """The run id of a (model, benchmark, settings) result: a re-run resumes the same run."""
    return "ev-" + _digest(project, model, benchmark, settings_hash)[:20]


def results_artifact_name(run: str) -> str:
    """Name of the artifact holding the result bundle of evaluation run ``run``."""
    return f"results-{run}"


def sync_command(run: TrackedRun) -> str:
    """The command that uploads an offline run."""
    return f"wandb sync {shlex.quote(str(run.path))}"


def log_evaluation(
    bundle_dir: Path, results_home: Path, target: WandbTarget, model_artifact: str | None = None
) -> TrackedRun:
    """Log a result bundle (``metrics.json`` + ``samples.jsonl``) as the run of its (model, benchmark,
    settings): config, summary metrics, every example in Tables of at most ``TABLE_ROWS`` rows, the bundle
    (its metrics without credentials) as an ``evaluation-results`` artifact and, online, the model artifact
    as the run's input (lineage)."""
    import wandb

    bundle_dir = Path(bundle_dir)
    metrics = json.loads((bundle_dir / "metrics.json").read_text(encoding="utf-8"))
    model, benchmark = metrics["model"]["name"], metrics["benchmark"]["name"]
    rid = run_id(metrics["project"], model, benchmark, metrics["settings_hash"])
    init = {
        "id": rid,
        "group": metrics["job_id"],
        "job_type": "evaluation",
        "name": f"{model} · {benchmark}",
        "config": evaluation_config(metrics, model_artifact),
    }
    with _run(metrics["project"], results_home, target, init) as (run, tracked):
        run.summary.update(evaluation_summary(metrics))
        for key, table in _sample_tables(bundle_dir / "samples.jsonl", metrics["benchmark"].get("output")):
            run.log({key: table})
        artifact = wandb.Artifact(
            results_artifact_name(rid), type="evaluation-results", metadata={"score": metrics["score"]}
        )
        with artifact.new_file("metrics.json", encoding="utf-8") as f:
            json.dump(scrub(metrics), f, indent=2, sort_keys=True)
        artifact.add_file(str(bundle_dir / "samples.jsonl"), name="samples.jsonl", skip_cache=True)
        run.log_artifact(artifact)
        if model_artifact and not tracked.offline:
            run.use_artifact(model_artifact)
    return tracked


def evaluation_config(metrics: dict[str, Any], model_artifact: str | None = None) -> dict[str, Any]:
    """The run config: where the model came from and everything that shaped the score, without credentials."""
    sections = ("benchmark", "harness", "settings", "resources", "versions", "server", "hardware")
    config = {name: metrics[name] for name in sections if metrics.get(name) is not None}
    config["model"] = dict(metrics["model"]) | ({"artifact": model_artifact} if model_artifact else {})
    config |= {"project": metrics["project"], "job_id": metrics["job_id"], "settings_hash": metrics["settings_hash"]}
    return scrub(config)


def evaluation_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """Every lm-eval metric under its short name (``acc,none`` -> ``acc``), the primary score, counts, timing."""
    timing = metrics.get("timing") or {}
    summary = {_short_metric(k): v for k, v in metrics["metrics"].items()}
    summary |= {"score": metrics["score"], "n_samples": metrics["n_samples"]}
    summary |= {"recorded_at": datetime.now(UTC).isoformat(), "wall_seconds": timing.get("seconds")}
    summary |= {k: timing.get(k) for k in ("requests_per_second", "tokens_in", "tokens_out")}
    if metrics.get("subscores"):
        summary["subscores"] = metrics["subscores"]
    score_ci = (metrics.get("ci") or {}).get("score") or {}
    summary |= {"score_ci_low": score_ci.get("ci_low"), "score_ci_high": score_ci.get("ci_high")}
    return {k: v for k, v in summary.items() if v is not None}


def log_leaderboard(board: dict[str, Any], results_home: Path, target: WandbTarget) -> TrackedRun:
    """Log the project's leaderboard (``Leaderboard.as_dict()``) as a Table and bar charts to the project's one
    leaderboard run; the newest Table is the run's summary, so it replaces the previous one."""
    import wandb

    columns = list(board["columns"])
    rows = board["rows"]
    head = ["rank", "tier", "model", "variant", "average", "average_ci_low", "average_ci_high", "benchmarks"]
    bounds = [f"{c}_{end}" for c in columns for end in ("ci_low", "ci_high")]
    data = [
        [row.get(k) for k in head[:5]]
        + list(row.get("average_ci") or (None, None))
        + [row.get("benchmarks"), row.get("evaluated_at")]
        + [(row.get("scores") or {}).get(c) for c in columns]
        + [x for c in columns for x in ((row.get("ci") or {}).get(c) or (None, None))]
        for row in rows
    ]
    charts = {f"charts/{c}": _bar_chart(rows, c, lambda r, c=c: (r.get("scores") or {}).get(c)) for c in columns}
    charts["charts/average"] = _bar_chart(rows, "average (normalised)", lambda r: r.get("average"))
    init = {
        "id": "leaderboard-" + _digest(board["project"])[:16],
        "job_type": "leaderboard",
        "name": f"leaderboard · {board['project']}",
    }
    with _run(board["project"], results_home, target, init) as (run, tracked):
        table = wandb.Table(columns=[*head, "evaluated_at", *columns, *bounds], data=data, allow_mixed_types=True)
        run.log({"leaderboard": table, **charts})
        run.summary["models"] = len(rows)
    return tracked


def _bar_chart(rows: list[dict[str, Any]], title: str, value: Any) -> Any:
    import wandb

    data = [[_label(r), value(r)] for r in rows if value(r) is not None]
    return wandb.plot.bar(wandb.Table(columns=["model", "score"], data=data), "model", "score", title=title)


def _label(row: dict[str, Any]) -> str:
    return f"{row['model']} [{row['variant']}]" if row.get("variant") else row["model"]


def rows_from_runs(project: str, runs: Iterable[Any]) -> list[ResultRow]:
    """Result rows rebuilt from a project's runs (``wandb.apis.public.Run``-shaped), oldest first.

    Only finished evaluation runs count: a running run has no final summary yet, a crashed or failed one no
    result to trust. Runs without the fields an evaluation run carries are skipped."""
    rows = []
    for run in runs:
        if getattr(run, "job_type", None) != "evaluation" or getattr(run, "state", None) != "finished":
            continue
        with suppress(KeyError, TypeError, ValueError, AttributeError):
            rows.append(_row(project, run))
    return sorted(rows, key=lambda r: r.recorded_at)


def _row(project: str, run: Any) -> ResultRow:
    config, summary = _plain(run.config), _plain(run.summary)
    benchmark = config["benchmark"]
    metrics = {
        (k if "," in k else f"{k},none"): float(v)
        for k, v in summary.items()
        if k not in SUMMARY_FIELDS and not k.startswith("_") and _is_number(v)
    }
    return ResultRow(
        project=project,
        model=config["model"]["name"],
        benchmark=benchmark["name"],
        settings_hash=config["settings_hash"],
        job_id=run.group or config["job_id"],
        category=benchmark["category"],
        metric=benchmark["metric"],
        score=float(summary["score"]),
        baseline=float(benchmark["baseline"]),
        n_samples=int(summary["n_samples"]),
        metrics=metrics,
        bundle=f"{project}/{results_artifact_name(run.id)}:latest",
        recorded_at=_utc(summary.get("recorded_at") or run.created_at),
        settings={k: v for k, v in config["settings"].items() if k in Settings.SCORE_FIELDS},
        subscores={k: float(v) for k, v in (summary.get("subscores") or {}).items()},
    )


def fetch_rows(project: str, target: WandbTarget) -> list[ResultRow]:
    """The project's result rows from its finished evaluation runs in W&B (none if the project is new)."""
    import wandb

    entity, name = _destination(project, target)
    with tempfile.TemporaryDirectory(prefix="evaljobs-wandb-") as scratch, session(Path(scratch)):
        try:
            runs = _api(target).runs("/".join(filter(None, (entity, name))), {"jobType": "evaluation"}, lazy=False)
            return rows_from_runs(project, runs)
        except ValueError as exc:  # a project nothing was logged to yet
            if "Could not find project" not in str(exc):
                raise
            return []
        except wandb.errors.Error as exc:
            raise PreflightError(
                f"W&B project {project!r}: cannot read its runs ({type(exc).__name__}: {exc}); check the API key "
                "and the W&B host of the connection"
            ) from None


def package_model(
    folder: Path,
    name: str,
    project: str,
    target: WandbTarget,
    results_home: Path,
    aliases: Iterable[str] = ("latest",),
) -> str:
    """Log a vLLM-loadable model folder as a ``model`` artifact and return its reference
    ``entity/project/name:latest``. Offline, the artifact lives in the offline run (the folder is referenced,
    not copied: keep it unchanged) and must be uploaded with ``wandb sync`` before a job can use it."""
    import wandb

    checked = check_folder(folder)
    if not ARTIFACT_NAME.fullmatch(name):
        raise PreflightError(f"artifact name {name!r}: use letters, digits, '-', '_' and '.' (at most 128)")
    if target.mode == "disabled":
        raise PreflightError("W&B is disabled (mode 'disabled'); packaging a model needs W&B online or offline")
    metadata = {
        "architecture": checked.architecture,
        "weight_bytes": checked.weight_bytes,
        "max_position_embeddings": checked.max_position_embeddings,
        "has_chat_template": checked.has_chat_template,
    }
    init = {"job_type": "package-model", "name": f"package {name}"}
    with _run(project, results_home, target, init) as (run, tracked):
        artifact = wandb.Artifact(name, type="model", metadata=metadata)
        artifact.add_dir(str(checked.path), policy="immutable", skip_cache=True)
        run.log_artifact(artifact, aliases=list(aliases))
    return "/".join(filter(None, (tracked.entity, tracked.project, f"{name}:latest")))


def download_model(ref: str, target: WandbTarget, dest_root: Path) -> Path:
    """The local folder of model artifact ``ref``: ``dest_root/<entity>/<project>/<name>/<version>``,
    downloaded once (into a temporary sibling, renamed when complete)."""
    import wandb

    if target.offline or target.mode == "disabled":
        raise PreflightError(
            f"checkpoint {ref!r} is a W&B artifact: downloading it needs a W&B API key (the Airflow "
            "connection wandb_default, or WANDB_API_KEY for the CLI); or download it (wandb artifact get) and give "
            "the folder"
        )
    dest_root = Path(dest_root)
    with session(dest_root / ".wandb"):
        try:
            artifact = _api(target).artifact(ref, type="model")
        except (wandb.errors.Error, ValueError) as exc:
            raise _artifact_error(ref, exc) from None
        folder = dest_root / artifact.entity / artifact.project / artifact.name.split(":")[0] / artifact.version
        if folder.is_dir():
            return folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{artifact.version}-", dir=folder.parent))
        try:
            artifact.download(root=str(partial), skip_cache=True)
            with suppress(OSError):  # another job may have finished the same download first
                partial.rename(folder)
        except (wandb.errors.Error, ValueError) as exc:
            raise _artifact_error(ref, exc) from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return folder


def _artifact_error(ref: str, exc: Exception) -> PreflightError:
    return PreflightError(
        f"checkpoint {ref!r}: cannot get this W&B artifact ({type(exc).__name__}: {exc}); check the reference "
        "(entity/project/name:alias, type model) and that the API key can read that project"
    )


def scrub(value: Any) -> Any:
    """``value`` without credentials: mapping keys naming one are dropped, and so are ``--flag value`` and
    ``--flag=value`` items of lists when the flag names one."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not is_secret_name(str(k))}
    if not isinstance(value, list):
        return value
    kept, skip = [], False
    for item in value:
        flag = isinstance(item, str) and item.startswith("-") and is_secret_name(item.split("=", 1)[0])
        if not (skip or flag):
            kept.append(scrub(item))
        skip = flag and "=" not in item
    return kept


def is_secret_name(name: str) -> bool:
    """Whether a key or flag names a credential: one of its words is key, token, secret, password, ...
    (whole words, so ``max_tokens`` stays)."""
    return any(word in SECRET_WORDS for word in re.split(r"[^a-z0-9]+", name.lower()))


@contextmanager
def _run(
    project: str, results_home: Path, target: WandbTarget, init: dict[str, Any]
) -> Iterator[tuple[Any, TrackedRun]]:
    """A started run of ``project`` ("entity/project" or "project") and what to report about it. On success
    the run is finished and older local folders of the same run id are removed, so one remains."""
    import wandb

    entity, name = _destination(project, target)
    results_home = Path(results_home)
    with session(results_home / "wandb"):
        run = wandb.init(project=name, entity=entity, resume="allow", settings=_settings(target, results_home), **init)
        disabled = target.mode == "disabled"
        path = None if disabled else Path(run.settings.sync_dir)
        if path:  # staged artifact files live with the run, and go when a re-run replaces it
            os.environ["WANDB_DATA_DIR"] = str(path / "data")
        offline = target.offline and not disabled
        url = None if disabled or offline else run.url
        tracked = TrackedRun(run.id, name, run.entity or entity, offline, path, url)
        try:
            yield run, tracked
        except BaseException:
            run.finish(exit_code=1)
            raise
        run.finish()
    if path:
        _prune(path, run.id)


def _settings(target: WandbTarget, results_home: Path) -> Any:
    """Run settings: quiet, no console capture or system sampling, runs under ``results_home/wandb``."""
    import wandb

    mode = "disabled" if target.mode == "disabled" else "offline" if target.offline else "online"
    credentials = {"api_key": target.api_key} if target.api_key and mode == "online" else {}
    if target.host:
        credentials["base_url"] = target.host
    return wandb.Settings(
        mode=mode,
        root_dir=str(results_home),
        silent=True,
        console="off",
        x_disable_stats=True,
        x_disable_meta=True,
        x_save_requirements=False,
        save_code=False,
        disable_git=True,
        **credentials,
    )


def _api(target: WandbTarget) -> Any:
    import wandb

    return wandb.Api(api_key=target.api_key, overrides={"base_url": target.host} if target.host else None)


@contextmanager
def session(root: Path) -> Iterator[None]:
    """A wandb session of its own, writing its config, cache and staging files under ``root``, not the home
    folder. The environment variables are restored after, and ``wandb.teardown()`` ends the session's service
    process (and its credentials), so the next session starts with its own folders. One session at a time;
    a session entered inside another joins it, so a job that holds one logs every run through one service
    (starting it costs ~0.3 s a session). Entering costs nothing until a call imports wandb."""
    global _session_depth
    with _SESSION_LOCK:
        if _session_depth:
            _session_depth += 1
            try:
                yield
            finally:
                _session_depth -= 1
            return
        saved = {k: os.environ.get(k) for k in (*ENV_DIRS, "WANDB_SERVICE")}
        os.environ.pop("WANDB_SERVICE", None)  # a parent's service would keep the parent's folders
        os.environ.update({k: str(root / sub) for k, sub in ENV_DIRS.items()})
        _session_depth = 1
        try:
            yield
        finally:
            _session_depth = 0
            if "wandb" in sys.modules:
                sys.modules["wandb"].teardown()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _prune(keep: Path, run: str) -> None:
    """Remove the other local folders of run id ``run`` (older runs of it) and dangling ``latest`` links."""
    pattern = re.compile(rf"(offline-)?run-\d{{8}}_\d{{6}}-{re.escape(run)}(-\d+)?")
    for folder in keep.parent.iterdir():
        if folder != keep and folder.is_dir() and not folder.is_symlink() and pattern.fullmatch(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
    for link in ("latest-run", "debug.log", "debug-internal.log"):
        path = keep.parent / link
        if path.is_symlink() and not path.exists():
            path.unlink(missing_ok=True)


def _sample_tables(path: Path, output: str | None) -> Iterator[tuple[str, Any]]:
    """The examples of ``samples.jsonl`` as Tables of at most ``TABLE_ROWS`` rows, read one Table at a time:
    key ``samples`` for one Table, ``samples/part-001``, ... for more."""
    import wandb

    extra = ["choices", "loglikelihoods"] if output == "multiple_choice" else ["raw_output"]
    columns = ["task", "doc_id", "input", "target", "output", "score", *extra]
    with path.open(encoding="utf-8") as f:
        total = sum(1 for line in f if line.strip())
    parts = -(-total // TABLE_ROWS)
    with path.open(encoding="utf-8") as f:
        lines = (line for line in f if line.strip())
        for part in range(1, parts + 1):
            rows = [[_cell(sample.get(c)) for c in columns] for sample in map(json.loads, islice(lines, TABLE_ROWS))]
            key = "samples" if parts == 1 else f"samples/part-{part:03d}"
            yield key, wandb.Table(columns=columns, data=rows, allow_mixed_types=True)


def _cell(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else value


def _short_metric(key: str) -> str:
    """``acc,none`` -> ``acc``; a filter other than ``none`` stays (``exact_match,flexible-extract``)."""
    name, _, filt = key.partition(",")
    return name if filt == "none" and name not in SUMMARY_FIELDS else key


def _destination(project: str, target: WandbTarget) -> tuple[str | None, str]:
    """(entity, project) of "entity/project", or of "project" with the target's entity."""
    entity, _, name = project.rpartition("/")
    if not PROJECT_NAME.fullmatch(name) or "/" in entity:
        raise PreflightError(
            f"project {project!r}: give 'project' or 'entity/project' (W&B project names have at most 128 "
            "characters and none of / \\ # ? % :)"
        )
    return entity or target.entity, name


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _plain(value: Any) -> Any:
    """Nested dict-likes (W&B summaries) as plain dicts."""
    return {k: _plain(v) for k, v in value.items()} if hasattr(value, "items") else value


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _utc(stamp: str) -> str:
    """An ISO time (W&B writes ``...Z`` or no zone, meaning UTC) as ``datetime.isoformat()`` in UTC."""
    moment = datetime.fromisoformat(stamp)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).isoformat()
