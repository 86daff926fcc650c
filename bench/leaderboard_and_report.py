"""Leaderboard and HTML report of a 100-model x 100-benchmark project, timed step by step.

Every (model, benchmark) result gets a bundle with --samples multiple-choice records (a prompt of ~600
characters each), as a job writes them. Set-up (recording 10,000 rows, writing the bundles) is not timed.
The board is built four times: first computing every result's CI (each bundle read once, its CI cached in
the bundle), then from the cached CIs, then twice with the tiers as well (every bundle's per-example scores
paired with its tier leader's): caching the scores in each bundle on first read, then from that cache. No
target for the tiers: they read every bundle, ~0.1 s a model of 100 benchmarks here.
Targets: the board builds in < 1 s, the HTML page renders in < 2 s: timed without the bundles (the page
without examples, as for results whose bundles are elsewhere) and with them (each bundle's worst and best
examples, ranked when it was written, read from its examples.json). With --pngs, the PNGs (matplotlib, one per
chart, what `evaljobs report` adds; ~60 s for 100 x 100 here) are timed too; no target.

    .venv/bin/python bench/leaderboard_and_report.py [--models 100 --benchmarks 100 --samples 50 --pngs]
Prints a table and writes bench/out/leaderboard_and_report.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from evaljobs.engine import leaderboard
from evaljobs.engine.report import render_html, write_examples, write_report
from evaljobs.engine.results import ResultRow, ResultsStore, write_jsonl

PROJECT = "bench"
TARGETS = {"leaderboard build": 1.0, "html render, no bundles": 2.0, "html render": 2.0}


def populate(home: Path, models: int, benchmarks: int, samples: int) -> None:
    """Record models x benchmarks rows of PROJECT, each with a bundle of ``samples`` records."""
    store, rng = ResultsStore(home), random.Random(0)
    prompt = "The following is a multiple choice question about a subject. " * 9 + "Question {b}.{i}?\nAnswer:"
    for m in range(models):
        skill = rng.random()
        for b in range(benchmarks):
            bundle = store.bundle_dir(PROJECT, f"model-{m:03d}", f"benchmark-{b:03d}", "h")
            records = []
            for i in range(samples):
                lls = [rng.uniform(-12, -1) for _ in range(4)]
                target = rng.randrange(4)
                lls[target] += 3 * skill
                output = max(range(4), key=lls.__getitem__)
                records.append({"task": f"benchmark-{b:03d}", "doc_id": i, "input": prompt.format(b=b, i=i),
                                "target": target, "score": float(output == target), "output": output,
                                "choices": [f" answer {c}" for c in "ABCD"], "loglikelihoods": lls})  # fmt: skip
            write_jsonl(bundle / "samples.jsonl", records)
            write_examples(bundle, records)
            score = sum(r["score"] for r in records) / samples
            store.record(
                ResultRow(
                    project=PROJECT,
                    model=f"model-{m:03d}",
                    benchmark=f"benchmark-{b:03d}",
                    settings_hash="h",
                    job_id="bench",
                    category="c",
                    metric="acc,none",
                    score=score,
                    baseline=0.25,
                    n_samples=samples,
                    metrics={"acc,none": score, "acc_stderr,none": 0.05},
                    bundle=str(bundle),
                    settings={"limit": samples},
                )
            )


@contextmanager
def no_fsync() -> Iterator[None]:
    """Files written without fsync: the set-up's bundles are throwaway, and 20,000 fsyncs were most of its time."""
    saved, os.fsync = os.fsync, lambda fd: None
    try:
        yield
    finally:
        os.fsync = saved


def timed(step, *args):
    started = time.perf_counter()
    result = step(*args)
    return result, time.perf_counter() - started


def measure(home: Path, pngs: bool) -> tuple[dict[str, float], str, int]:
    """Seconds per step, the page (with examples) and the number of PNGs written (with ``pngs``)."""
    seconds = {}
    rows, seconds["store read"] = timed(ResultsStore(home).rows, PROJECT)
    _, seconds["leaderboard build, CIs computed"] = timed(leaderboard.build, PROJECT, rows, "compute", False)
    _, seconds["leaderboard build"] = timed(leaderboard.build, PROJECT, rows, "compute", False)
    _, seconds["leaderboard build + tiers, scores cached"] = timed(leaderboard.build, PROJECT, rows)
    board, seconds["leaderboard build + tiers"] = timed(leaderboard.build, PROJECT, rows)
    no_bundles = [replace(r, bundle=str(home / "none")) for r in rows]
    _, seconds["html render, no bundles"] = timed(render_html, board, no_bundles)
    page, seconds["html render"] = timed(render_html, board, rows)
    _, seconds["write_report (as a job: html)"] = timed(write_report, PROJECT, home, home / "report", None, False)
    if pngs:
        _, seconds["import matplotlib (once a process)"] = timed(importlib.import_module, "matplotlib.figure")
        _, seconds["write_report (html + pngs)"] = timed(write_report, PROJECT, home, home / "report")
        seconds["pngs"] = seconds["write_report (html + pngs)"] - seconds["write_report (as a job: html)"]
    return seconds, page, len(list((home / "report" / "charts").glob("*.png")))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--benchmarks", type=int, default=100)
    parser.add_argument("--samples", type=int, default=50, help="records per bundle")
    parser.add_argument("--pngs", action="store_true", help="also time the PNG charts (~1 minute)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "leaderboard_and_report.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="evaljobs-bench-report-") as tmp:
        print(f"setting up {args.models} x {args.benchmarks} results under {tmp} ...", flush=True)
        with no_fsync():
            populate(Path(tmp), args.models, args.benchmarks, args.samples)
        seconds, page, pngs = measure(Path(tmp), args.pngs)

    print(f"\n{'step':36} {'seconds':>8}  target")
    for step, value in seconds.items():
        target = TARGETS.get(step)
        verdict = "" if target is None else f"< {target:g} s " + ("ok" if value < target else "MISSED")
        print(f"{step:36} {value:8.3f}  {verdict}")
    print(f"\npage: {len(page.encode()) / 1e6:.1f} MB, {pngs} PNGs")
    result = {
        "models": args.models,
        "benchmarks": args.benchmarks,
        "samples_per_bundle": args.samples,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "targets_seconds": TARGETS,
        "targets": [
            {
                "name": f"{step}, {args.models} x {args.benchmarks}",
                "value": round(seconds[step], 3),
                "target": f"< {target:g}",
                "unit": "s",
                "met": seconds[step] < target,
            }  # fmt: skip
            for step, target in TARGETS.items()
        ],
        "page_bytes": len(page.encode()),
        "pngs": pngs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
