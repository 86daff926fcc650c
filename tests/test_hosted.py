"""A hosted OpenAI-compatible endpoint with an API key held as a secret (the session's vLLM server plays
the provider). The key is a canary: it must appear in no file the job writes."""

import pytest

from evaljobs.engine.errors import PreflightError
from evaljobs.engine.job import run_job
from evaljobs.engine.spec import JobSpec


def hosted(server, home, api):
    return JobSpec.parse(
        {
            "model": {"base_url": server.base_url, "model": "smollm2", "api": api, "api_key_secret": "TEAM_LLM_KEY"},
            "benchmarks": ["gsm8k_local"],
            "settings": {"limit": 4, "max_tokens": 96},
            "destination": {"project": "hosted", "results_home": str(home)},
        }
    )


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_hosted_job_uses_the_secret_and_never_writes_it(vllm_server, api_key, tmp_path, api, capsys):
    result = run_job(hosted(vllm_server, tmp_path, api), secrets={"TEAM_LLM_KEY": api_key})
    [row] = result.rows
    assert row.model == "smollm2" and row.n_samples == 4
    assert 0.0 <= row.score <= 1.0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "samples.jsonl" for p in written)
    for path in written:
        assert api_key.encode() not in path.read_bytes(), path
    assert api_key not in capsys.readouterr().out
    assert api_key not in str(result.summary())


def test_a_wrong_key_is_refused_before_any_request(vllm_server, tmp_path):
    with pytest.raises(PreflightError, match="refused the API key \\(HTTP 401\\)"):
        run_job(hosted(vllm_server, tmp_path, "chat"), secrets={"TEAM_LLM_KEY": "wrong"})
