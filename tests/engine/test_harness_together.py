"""The benchmarks of a job evaluated together, against the latency-bound endpoint (no model needed)."""

from __future__ import annotations

import time

import pytest

from evaljobs.engine import catalog
from evaljobs.engine.errors import HarnessError
from evaljobs.engine.harness import Endpoint, Harness
from evaljobs.engine.spec import Settings
from tests.latency_endpoint import LatencyEndpoint, limit

ROWS = 8
CHOICES = 4


@pytest.fixture(scope="module")
def endpoint():
    with LatencyEndpoint(0.2, 16) as running:
        yield running


def harness(endpoint: LatencyEndpoint, model_dir, cache, concurrency: int = 16) -> Harness:
    served = Endpoint(endpoint.base_url, "latency-model", "completions", str(model_dir))
    return Harness(served, Settings(limit=ROWS, concurrency=concurrency, max_tokens=16), cache)


def test_the_endpoint_is_latency_bound(endpoint, model_dir, tmp_path):
    endpoint.reset()
    started = time.monotonic()
    run = harness(endpoint, model_dir, tmp_path / "cache").run(catalog.load("arc_challenge_local"))
    seconds = time.monotonic() - started
    stats = endpoint.stats()
    assert run.n_samples == ROWS and stats["peak_in_flight"] == 16  # 32 requests, 16 at a time
    assert seconds >= limit(ROWS * CHOICES, 0.2, 16) == 0.4
    # lm-eval's own log-likelihood parser read our echo + logprobs answers: one per choice, the highest chosen.
    for sample in run.samples:
        assert len(sample["loglikelihoods"]) == CHOICES
        assert sample["output"] == max(range(CHOICES), key=sample["loglikelihoods"].__getitem__)


def test_benchmarks_together_share_the_endpoint_and_score_as_alone(endpoint, model_dir, tmp_path):
    names = ["arc_challenge_local", "mmlu_marketing_local", "gsm8k_local"]
    benchmarks = [catalog.load(n) for n in names]
    alone = {b.name: harness(endpoint, model_dir, tmp_path / "alone").run(b) for b in benchmarks}
    before = endpoint.stats()["requests"]
    [together] = list(harness(endpoint, model_dir, tmp_path / "together").evaluate(benchmarks))
    assert endpoint.stats()["requests"] - before == 2 * ROWS * CHOICES + ROWS
    assert [r.benchmark.name for r in together] == names
    for run in together:
        assert run.together == names and run.seconds == together[0].seconds
        assert run.metrics == alone[run.benchmark.name].metrics
        assert run.samples == alone[run.benchmark.name].samples


def test_a_broken_benchmark_does_not_fail_the_others(endpoint, model_dir, tmp_path):
    good = catalog.load("arc_challenge_local")
    broken = good.model_copy(
        update={
            "name": "broken",
            "config": good.config
            | {"task": "broken", "dataset_kwargs": {"data_files": {"test": str(tmp_path / "gone.jsonl")}}},
        }
    )
    evaluating = harness(endpoint, model_dir, tmp_path / "cache")
    before = endpoint.stats()["requests"]
    outcomes = list(evaluating.evaluate([good, broken]))
    assert [len(o) for o in outcomes] == [1, 1]  # the joint call failed: each alone
    [[run], [error]] = outcomes
    assert run.benchmark.name == "arc_challenge_local" and run.n_samples == ROWS and run.together == [good.name]
    assert isinstance(error, HarnessError) and str(error).startswith("benchmark broken failed:")
    assert endpoint.stats()["requests"] - before == ROWS * CHOICES


def test_a_large_custom_benchmark_runs_in_slices_and_scores_as_in_one_call(endpoint, model_dir, tmp_path, monkeypatch):
    from evaljobs.engine import harness as harness_module

    arc = catalog.load("arc_challenge_local")
    whole = harness(endpoint, model_dir, tmp_path / "whole").run(arc)  # one lm-eval call
    monkeypatch.setattr(harness_module, "SLICE_ROWS", 3)
    before = endpoint.stats()["requests"]
    [[sliced]] = list(harness(endpoint, model_dir, tmp_path / "sliced").evaluate([arc]))  # rows 0-2, 3-5, 6-7
    assert endpoint.stats()["requests"] - before == ROWS * CHOICES  # every row asked once
    assert sliced.n_samples == whole.n_samples == ROWS
    assert len(sliced.samples) == ROWS and [r["doc_id"] for r in sliced.samples] == list(range(ROWS))
    assert list(sliced.samples) == whole.samples  # read back from the spool file
    assert set(sliced.metrics) == set(whole.metrics) and "acc_stderr,none" in sliced.metrics
    assert sliced.metrics == pytest.approx(whole.metrics)  # means and standard errors from every row


def test_a_sliced_benchmarks_data_is_converted_in_a_child_process_and_only_mapped_here(tmp_path, monkeypatch):
    import datasets

    from evaljobs.engine.harness import convert_in_child

    cache = tmp_path / "datasets"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))
    arc = catalog.load("arc_challenge_local")
    convert_in_child(arc)
    arrows = sorted(cache.rglob("*.arrow"))
    assert arrows  # the child wrote the Arrow cache

    config = arc.task_config()  # loaded as lm-eval loads it
    loaded = datasets.load_dataset(config["dataset_path"], **config["dataset_kwargs"], cache_dir=str(cache))
    assert sorted(cache.rglob("*.arrow")) == arrows  # no second conversion
    assert {f["filename"] for f in loaded["test"].cache_files} <= {str(a) for a in arrows}
    assert len(loaded["test"]) == arc.size
