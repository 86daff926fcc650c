"""The Inspect backend against the session's vLLM server, on rows read from a dataset mirror: the same
benchmark on both backends gives comparable bundles, and a judge-scored benchmark grades through its judge,
whose calls are cached."""

import json
from pathlib import Path

import pytest

from evaljobs.engine.errors import PreflightError
from evaljobs.engine.job import run_job
from evaljobs.engine.spec import JobSpec
from tests.test_mirror import mirror as mirror  # noqa: F401  (the fixture)
from tests.test_mirror import read_jsonl


def job(server, home: Path, root: Path, benchmarks: list[str], judge: dict | None = None, **settings) -> JobSpec:
    spec = {
        "model": {"base_url": server.base_url, "model": "smollm2", "api_key_secret": "TEAM_LLM_KEY"},
        "benchmarks": benchmarks,
        "settings": settings,
        "datasets": {"mirror": str(root)},
        "destination": {"project": "inspect", "results_home": str(home), "wandb": "disabled"},
    }
    return JobSpec.parse(spec | ({"judge": judge} if judge else {}))


def test_gsm8k_on_inspect_and_on_lm_eval_give_comparable_bundles(vllm_server, api_key, mirror, tmp_path):
    secrets, settings = {"TEAM_LLM_KEY": api_key}, {"limit": 4, "max_tokens": 96, "num_fewshot": 2}
    [inspect] = run_job(job(vllm_server, tmp_path, mirror, ["gsm8k"], backend="inspect", **settings), secrets).rows
    [lm_eval] = run_job(job(vllm_server, tmp_path, mirror, ["gsm8k"], **settings), secrets).rows
    assert (inspect.benchmark, inspect.metric, inspect.n_samples) == ("gsm8k", "accuracy,match", 4)
    assert inspect.settings_hash != lm_eval.settings_hash  # two leaderboard entries, never mixed
    bundles = {row.metric: Path(row.bundle) for row in (inspect, lm_eval)}
    records = {metric: read_jsonl(bundle / "samples.jsonl") for metric, bundle in bundles.items()}
    assert {frozenset(r) for rs in records.values() for r in rs} == {
        frozenset({"task", "doc_id", "input", "target", "score", "output", "raw_output"})
    }
    test = read_jsonl(mirror / "openai/gsm8k/main/test.jsonl")
    for record in records["accuracy,match"]:  # Inspect's target is the final number
        [asked] = [row for row in test[:4] if row["question"] in json.loads(record["input"])[-1]["content"]]
        assert record["target"] == asked["answer"].split("####")[-1].strip()
        assert record["score"] in (0.0, 1.0) and record["score"] == float(record["output"] == record["target"])
    assert {r["target"] for r in records["exact_match,strict-match"]} == {row["answer"] for row in test[:4]}
    assert inspect.score == sum(r["score"] for r in records["accuracy,match"]) / 4
    metrics = json.loads((bundles["accuracy,match"] / "metrics.json").read_text())
    assert metrics["harness"]["backend"] == "inspect" and metrics["harness"]["task"] == "inspect_evals/gsm8k"
    assert metrics["harness"]["tokens"]["model"]["calls"] == 4


# SimpleQA Verified's fields (codelion/SimpleQA-Verified); three questions of its kind, written for this test.
SIMPLEQA_ROWS = [
    {"problem": "What is the chemical symbol of gold?", "answer": "Au", "topic": "Science"},
    {"problem": "In which year did the Berlin Wall fall?", "answer": "1989", "topic": "History"},
    {"problem": "What is the capital city of Australia?", "answer": "Canberra", "topic": "Geography"},
]


def test_a_judge_scored_benchmark_grades_through_its_judge_and_caches_it(vllm_server, api_key, mirror, tmp_path):
    folder = mirror / "codelion" / "SimpleQA-Verified"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [row | {"original_index": i, "answer_type": "Other", "multi_step": False, "requires_reasoning": False,
                   "urls": ""} for i, row in enumerate(SIMPLEQA_ROWS)]  # fmt: skip
    (folder / "simpleqa_verified.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    # The session's server stands in for the judge: allowed only because the job says so explicitly.
    judge = {"model": "smollm2", "base_url": vllm_server.base_url, "allow_model_under_test": True}
    judge |= {"usd_per_million_input": 1.0, "usd_per_million_output": 2.0}
    spec = job(vllm_server, tmp_path, mirror, ["simpleqa_verified"], judge=judge, max_tokens=32)
    usage, metrics = [], []
    for _ in range(2):  # the re-run replaces the bundle: read it after each run
        [row] = run_job(spec, {"TEAM_LLM_KEY": api_key}).rows
        usage.append(json.loads((Path(row.bundle) / "metrics.json").read_text())["harness"]["tokens"])
        metrics.append(row.metrics)
    assert (row.benchmark, row.n_samples) == ("simpleqa_verified", 3)
    assert usage[0]["grader"]["calls"] == 3 and usage[0]["grader"]["cached"] == 0  # one grading call an answer
    assert usage[0]["grader"]["input_tokens"] > 0
    grader = usage[0]["grader"]
    assert grader["billed_input_tokens"] == grader["input_tokens"]
    assert grader["cost_usd"] == round((grader["input_tokens"] + 2 * grader["output_tokens"]) / 1e6, 6)
    # the re-run sends nothing to the judge: nothing is billed
    nothing_billed = {"cached": 3, "billed_input_tokens": 0, "billed_output_tokens": 0}
    assert usage[1]["grader"] == grader | nothing_billed | {"cost_usd": 0}
    assert usage[1]["model"] == usage[0]["model"] | nothing_billed
    assert metrics[1] == metrics[0] and "accuracy,schema_tool_graded_scorer" in metrics[0]
    self_graded = spec.model_copy(update={"judge": spec.judge.model_copy(update={"allow_model_under_test": False})})
    with pytest.raises(PreflightError, match="the judge of simpleqa_verified is the model under test"):
        run_job(self_graded, {"TEAM_LLM_KEY": api_key})
