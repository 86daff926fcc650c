"""What copying the request cache to object storage costs a job (issue 16, a lost pod resumes), side by side.

The workload: 300 GSM8K generations + 300 ARC-Challenge questions (1,500 requests) on the latency-bound
endpoint (L = 50 ms, C = 64: up to 1,280 answers a second, more than most GPU servers give), through the
job's lm-eval harness with an empty request cache each time. Variants, interleaved in each round (the order
rotates) after an untimed warm-up:
- no copy (a local results home);
- the copy at its defaults (``cache_copy_answers`` N, ``cache_copy_seconds`` T) to a real S3 server
  (SeaweedFS, tests/objectstore.py, started here);
- N = 100, and the copy at its dearest: a segment per answer (N = 1).
Wall time is the evaluation plus the copy's final flush; a variant's ratio is to the run without copying in
the same round (the machines are noisy: medians of the rounds); CPU time, of this process's threads, is the
steadier measure of what the copy itself costs. Also measured: the mean put of a segment, and the
restore that a fresh pod does (every segment read back into an empty SQLite cache), whose harness run then
sends 0 requests. Target: the defaults cost <= 1.05 x the wall time without copying.

    .venv/bin/python bench/cache_copy.py [--limit 100] [--rounds 3] [--latency 0.05]
Prints a table and writes bench/out/cache_copy.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import table, write
from tests.latency_endpoint import MODEL, LatencyEndpoint, limit
from tests.objectstore import start

from evaljobs.engine import catalog
from evaljobs.engine.cachecopy import CacheCopy, restore, segments_url
from evaljobs.engine.harness import Endpoint, Harness
from evaljobs.engine.modelprep import prepare_embedded
from evaljobs.engine.spec import Settings, default_results_home

BENCHMARKS = ["arc_challenge_local", "gsm8k_local"]
CONCURRENCY = 64


def evaluate(
    endpoint: LatencyEndpoint, model: Path, cache: Path, rows: int, copy: CacheCopy | None
) -> tuple[float, float]:
    """Wall and CPU seconds (this process's threads) to evaluate the workload with an empty cache, the copy's
    final flush included."""
    served = Endpoint(endpoint.base_url, MODEL, "completions", str(model))
    harness = Harness(served, Settings(limit=rows, concurrency=CONCURRENCY), cache, log=lambda _: None, copy=copy)
    benchmarks = [catalog.load(name) for name in BENCHMARKS]
    started, cpu = time.perf_counter(), time.process_time()
    outcomes = [o for batch in harness.evaluate(benchmarks) for o in batch]
    if copy is not None:
        copy.close()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert all(not isinstance(o, Exception) for o in outcomes), outcomes
    return seconds, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=300, help="examples per benchmark")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    os.environ["TQDM_DISABLE"] = "1"  # lm-eval's bars (the job turns them off the same way)
    model = prepare_embedded(default_results_home() / "models" / "smollm2-135m-instruct").path
    defaults = Settings()
    every, seconds = defaults.cache_copy_answers, defaults.cache_copy_seconds
    variants: dict[str, tuple[int, float] | None] = {
        "no copy": None,
        f"copy, defaults (N={every}, T={seconds:g} s)": (every, seconds),
        f"copy, N=100, T={seconds:g} s": (100, seconds),
        f"copy, a segment per answer (N=1, T={seconds:g} s)": (1, seconds),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    puts: dict[str, list[float]] = {name: [] for name in variants}
    segments: dict[str, list[int]] = {name: [] for name in variants}
    urls: dict[str, str] = {}
    cpus: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory(prefix="bench-cache-copy-") as tmp:
        work = Path(tmp)
        with start(work / "s3") as s3, LatencyEndpoint(args.latency, CONCURRENCY) as endpoint:
            os.environ.update(s3.env)
            bucket = s3.bucket("bench")
            s3.client().put_object(Bucket=bucket, Key="warm-up", Body=b"")  # a bucket's first put allocates storage
            evaluate(endpoint, model, work / "warm-up", args.limit, None)  # imports, tokenizer, datasets
            for number, name in enumerate(variants):  # each variant's folder: a model's, made by its first put
                urls[name] = segments_url(f"s3://{bucket}/home-{number}", "model")
                s3.client().put_object(Bucket=bucket, Key=f"home-{number}/cache/model/segments/made", Body=b"")
            endpoint.reset()
            requests = endpoint.stats()["requests"]
            names = list(variants)
            for round_ in range(args.rounds):
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    cadence = variants[name]
                    url = urls[name]
                    copy = CacheCopy(url, "bench", *cadence, log=print).start() if cadence else None
                    wall, cpu = evaluate(endpoint, model, work / f"cache-{time.monotonic_ns()}", args.limit, copy)
                    times[name].append(wall)
                    cpus[name].append(cpu)
                    if copy is not None:
                        puts[name].append(copy.put_seconds / max(1, len(copy.segments)))
                        segments[name].append(len(copy.segments))
            sent = (endpoint.stats()["requests"] - requests) // (args.rounds * len(variants))
            # the segments of the run with the most of them (N = 1), into a fresh pod's empty cache
            restored = restore(urls[names[-1]], work / "fresh")
            before = endpoint.stats()["requests"]
            resumed = evaluate(endpoint, model, work / "fresh", args.limit, None)[0]
            resent = endpoint.stats()["requests"] - before
    rows: list[list[Any]] = []
    for name in variants:
        wall = statistics.median(times[name])
        ratios = [t / base for t, base in zip(times[name], times["no copy"], strict=True)]  # within a round
        cpu = [c / base for c, base in zip(cpus[name], cpus["no copy"], strict=True)]
        put = statistics.mean(puts[name]) * 1000 if puts[name] else None
        rows.append(
            [name, wall, statistics.median(ratios), statistics.median(cpus[name]), statistics.median(cpu)]
            + [max(segments[name], default=0), put]
        )
    table(
        f"{sent} requests, latency {args.latency * 1000:.0f} ms, concurrency {CONCURRENCY} (limit "
        f"{limit(sent, args.latency, CONCURRENCY):.1f} s); medians of {args.rounds} rounds (ratio: to no copy in "
        "the same round)",
        ["variant", "wall s", "ratio", "CPU s", "CPU ratio", "segments", "put ms"],
        rows,
    )
    table(
        "a fresh pod's restore of a run copied a segment per answer",
        ["answers", "segments", "restore s", "evaluate s", "requests sent"],
        [[restored.answers, restored.segments, restored.seconds, resumed, resent]],
    )
    ratio = rows[1][2]
    result = {
        "requests": sent,
        "latency": args.latency,
        "concurrency": CONCURRENCY,
        "rounds": args.rounds,
        "times": times,
        "cpu_seconds": cpus,
        "put_ms": {k: [p * 1000 for p in v] for k, v in puts.items()},
        "segments": segments,
        "restore": {"answers": restored.answers, "segments": restored.segments, "seconds": restored.seconds},
        "resumed": {"seconds": resumed, "requests_sent": resent},
        "targets": [
            {
                "name": "copy at the defaults vs none",
                "value": round(ratio, 3),
                "target": "<= 1.05",
                "unit": "x",
                "met": ratio <= 1.05,
            },
            {
                "name": "CPU at the defaults vs none",
                "value": round(rows[1][4], 3),
                "target": "-",
                "unit": "x",
                "met": None,
            },
            {
                "name": "a segment per answer vs none",
                "value": round(rows[-1][2], 3),
                "target": "-",
                "unit": "x",
                "met": None,
            },
            {
                "name": "requests a restored run sends",
                "value": resent,
                "target": "0",
                "unit": "requests",
                "met": resent == 0,
            },
        ],
    }
    print(f"wrote {write('cache_copy', result)}")


if __name__ == "__main__":
    main()
