"""The Inspect backend against the session's vLLM server, on rows read from a dataset mirror: the same
benchmark on both backends gives comparable bundles, and a judge-scored benchmark grades through its judge,
whose calls are cached."""

import json
from pathlib import Path

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
