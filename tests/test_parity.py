"""vLLM-served log-likelihoods equal transformers' for the same lm-eval requests (float32, CPU)."""

import pytest

from evaljobs.engine import catalog
from evaljobs.engine.harness import Endpoint, Harness
from evaljobs.engine.spec import Settings

TOLERANCE = 1e-4


@pytest.mark.parametrize(("name", "limit"), [("arc_challenge_local", 12), ("mmlu_marketing_local", 3)])
def test_vllm_and_transformers_log_likelihoods_agree(vllm_server, api_key, model_dir, tmp_path, name, limit):
    import lm_eval

    benchmark = catalog.load(name)
    endpoint = Endpoint(vllm_server.base_url, "smollm2", "completions", str(model_dir), api_key, 2048)
    served = Harness(endpoint, Settings(limit=limit), tmp_path / "cache").run(benchmark)

    local = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model_dir), "dtype": "float32", "device": "cpu"},
        tasks=[benchmark.task_config()],
        limit=limit,
        log_samples=True,
    )
    reference = {s["doc_id"]: [float(r[0]) for r in s["filtered_resps"]] for s in local["samples"][name]}

    assert len(served.samples) == len(reference) == limit
    worst = 0.0
    for sample in served.samples:
        expected = reference[sample["doc_id"]]
        assert len(sample["loglikelihoods"]) == len(expected) == 4
        worst = max(worst, *(abs(a - b) for a, b in zip(sample["loglikelihoods"], expected, strict=True)))
    assert worst <= TOLERANCE, f"largest difference {worst:.2e}"
