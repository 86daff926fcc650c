"""Test data: result rows for tests that need a results store without running a job, and form values."""

from evaljobs.engine.results import ResultRow, ResultsStore


def result_row(model="m", benchmark="b", score=0.5, baseline=0.25, settings_hash="h", project="p") -> ResultRow:
    return ResultRow(
        project=project,
        model=model,
        benchmark=benchmark,
        settings_hash=settings_hash,
        job_id="j",
        category="c",
        metric="acc,none",
        score=score,
        baseline=baseline,
        n_samples=10,
        metrics={"acc,none": score},
        bundle="/b",
    )


def record(home, model="m", benchmark="b", score=0.5, baseline=0.0) -> ResultRow:
    """Record one row of project ``p`` under the results home ``home``."""
    return ResultsStore(home).record(result_row(model, benchmark, score, baseline))


def hosted_form(base_url: str) -> dict:
    """What the evaljobs_hosted trigger form sends for the session's vLLM server playing a hosted provider."""
    return {
        "base_url": base_url,
        "model": "smollm2",
        "api_key_secret": "TEAM_LLM_KEY",
        "api": "chat",
        "benchmarks": ["gsm8k_local"],
        "limit": 2,
        "max_tokens": 48,
        "project": "hosted",
    }
