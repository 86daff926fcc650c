"""A benchmark sharded over N jobs against one job, at the same per-job concurrency, side by side in one run.

The endpoint (tests/latency_endpoint.py) answers each request in exactly L seconds and serves far more at once
than the jobs send, so it stands for a server with capacity to spare (a vLLM Deployment with replicas): one
job is bound by its own concurrency C (C / L requests a second), and N shard jobs send N x C at once. Each job
is a real ``evaljobs run`` process (the command a pod runs), the N shards started together; their parts are
then merged (``evaljobs merge``) and the merged score checked against the one job's.

Throughput is the requests the endpoint answered over the span from the first request's arrival to the last
answer (the endpoint's own clock), so each process's fixed start-up (imports, the dataset: ~7-10 s here, paid
by each shard in parallel) is left out; the wall times, start-up included, are printed beside it. Target: N
shards give at least 0.8 x N the throughput of one job.

    .venv/bin/python bench/shards.py [--shards 4] [--limit 0] [--concurrency 4] [--latency 0.1]
Prints a table and writes bench/out/shards.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import table, write
from tests.latency_endpoint import MODEL, LatencyEndpoint

BENCHMARK = "arc_challenge_local"


def spec(model: Path, home: Path, url: str, project: str, limit: int, concurrency: int, shard: tuple | None) -> dict:
    settings = {"limit": limit, "concurrency": concurrency}
    settings |= {"shards": shard[1], "shard": shard[0]} if shard else {}
    return {
        "model": {"checkpoint": str(model), "endpoint": url, "model": MODEL},
        "benchmarks": [BENCHMARK],
        "settings": settings,
        "destination": {"project": project, "results_home": str(home), "wandb": "disabled"},
        "job_id": f"{project}-{shard[0] if shard else 'all'}",
    }


def jobs(specs: list[dict], work: Path, endpoint: LatencyEndpoint) -> dict:
    """Run one ``evaljobs run`` process a spec, all at once; the endpoint's span and the wall time."""
    endpoint.reset()
    before = endpoint.stats()["requests"]
    started, processes = time.perf_counter(), []
    for data in specs:
        path = work / f"{data['job_id']}.json"
        path.write_text(json.dumps(data))
        command = [sys.executable, "-m", "evaljobs.cli", "run", "--spec", str(path)]
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate()[0] for p in processes]
    wall = time.perf_counter() - started
    if any(p.returncode for p in processes):
        sys.exit("a job failed:\n" + "\n".join(o[-2000:] for o in outputs))
    stats = endpoint.stats()
    requests, span = stats["requests"] - before, stats["last_answer"] - stats["first_arrival"]
    return {"jobs": len(specs), "requests": requests, "span_s": span, "rps": requests / span, "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--limit", type=int, default=0, help="rows of the benchmark (4 requests a row; 0 = all 1,172)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight per job")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the endpoint takes a request")
    args = parser.parse_args()
    model = Path(os.environ["EVALJOBS_HOME"]) / "models" / "smollm2-135m-instruct"
    with tempfile.TemporaryDirectory(prefix="bench-shards-") as tmp, LatencyEndpoint(args.latency, 1024) as endpoint:
        work, n = Path(tmp), args.shards
        home_one, home_shards = work / "one", work / "sharded"  # separate request caches: every request is sent
        shape = (args.limit, args.concurrency)
        one = jobs([spec(model, home_one, endpoint.base_url, "one", *shape, None)], work, endpoint)
        shard_specs = [spec(model, home_shards, endpoint.base_url, "sharded", *shape, (k, n)) for k in range(n)]
        sharded = jobs(shard_specs, work, endpoint)
        [folder] = (home_shards / "shards").glob(f"*/*/{BENCHMARK}/*")
        merge = subprocess.run(
            [sys.executable, "-m", "evaljobs.cli", "merge", str(folder), "--summary-out", str(work / "m.json")],
            capture_output=True,
            text=True,
        )
        if merge.returncode:
            sys.exit(f"the merge failed:\n{merge.stdout[-2000:]}{merge.stderr[-2000:]}")
        merged = json.loads((work / "m.json").read_text())["scores"][BENCHMARK]
        from evaljobs.engine.results import ResultsStore

        [single] = ResultsStore(home_one).rows("one")
    ratio = sharded["rps"] / one["rps"]
    rows = [
        [f"1 job, concurrency {args.concurrency}", one["requests"], one["span_s"], one["rps"], one["wall_s"]],
        [f"{n} shards, concurrency {args.concurrency} each", *(sharded[k] for k in ("requests", "span_s", "rps"))]
        + [sharded["wall_s"]],
    ]
    text = table(
        f"{BENCHMARK}, {one['requests'] // 4} rows, endpoint latency {args.latency} s (ratio {ratio:.2f}, target >= "
        f"{0.8 * n:.1f})",
        ["run", "requests", "span s", "requests/s", "wall s"],
        rows,
    )
    assert merged == single.score, (merged, single.score)
    print(f"merged score {merged:.4f} = one job's {single.score:.4f}")
    result = {"one": one, "sharded": sharded, "ratio": ratio, "merged_score": merged, "table": text}
    result["targets"] = [
        {
            "name": f"{n} shards / 1 job throughput",
            "value": round(ratio, 2),
            "target": f">= {0.8 * n:.1f}",
            "unit": "x",
            "met": ratio >= 0.8 * n,
        },
    ]
    print(f"wrote {write('shards', result)}")


if __name__ == "__main__":
    main()
