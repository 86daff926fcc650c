import pytest

from evaljobs.engine.errors import SpecError
from evaljobs.engine.spec import JobSpec, Settings

CHECKPOINT = {"checkpoint": "/models/smol"}


def problems(data: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        JobSpec.parse(data)
    return info.value.problems


def test_defaults_and_normalised_base_url():
    spec = JobSpec.parse({"model": {"base_url": "https://api.example.com/", "model": "m"}, "benchmarks": ["gsm8k"]})
    assert spec.model.base_url == "https://api.example.com/v1"
    assert spec.model.hosted and spec.model.display_name == "m"
    assert spec.settings.limit == 0 and spec.settings.concurrency > 1
    assert JobSpec.parse({"model": CHECKPOINT, "benchmarks": ["gsm8k"]}).model.display_name == "smol"


def test_unknown_benchmark_lists_close_matches():
    [problem] = problems({"model": CHECKPOINT, "benchmarks": ["gsm8kk", "arc_challenge"]})
    assert problem.startswith("benchmarks: unknown benchmark 'gsm8kk'")
    assert "did you mean gsm8k" in problem


def test_negative_limit_names_the_field():
    [problem] = problems({"model": CHECKPOINT, "benchmarks": ["gsm8k"], "settings": {"limit": -1}})
    assert problem == "settings.limit: Input should be greater than or equal to 0 (got -1)"


def test_missing_model():
    [problem] = problems({"model": {}, "benchmarks": ["gsm8k"]})
    assert problem.startswith("model: no model given; set checkpoint")


def test_both_checkpoint_and_base_url():
    [problem] = problems({"model": {**CHECKPOINT, "base_url": "http://h/v1", "model": "m"}, "benchmarks": ["gsm8k"]})
    assert problem == "model: give either checkpoint (served by vLLM) or base_url (hosted), not both"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"model": {"base_url": "http://h/v1"}, "benchmarks": ["gsm8k"]}, "model: a hosted endpoint needs model"),
        (
            {"model": {"base_url": "file:///etc/passwd", "model": "m"}, "benchmarks": ["gsm8k"]},
            "model.base_url: 'file:///etc/passwd' is not an http(s) URL",
        ),
        (
            {"model": {"base_url": "http://h", "model": "m", "api_key_secret": "my key"}, "benchmarks": ["gsm8k"]},
            "model.api_key_secret: 'my key' is not a secret name",
        ),
        (
            {"model": CHECKPOINT, "benchmarks": ["gsm8k"], "resources": {"gpus": 3}},
            "resources: gpus 3 is over the limit of 2 GPUs a job (resources.max_gpus)",
        ),
        ({"model": CHECKPOINT, "benchmarks": []}, "benchmarks: List should have at least 1 item"),
        (
            {"model": CHECKPOINT, "benchmarks": ["gsm8k"], "settings": {"limt": 3}},
            "settings.limt: unknown field; remove it or check its spelling",
        ),
        (
            {"model": CHECKPOINT, "benchmarks": ["gsm8k"], "settings": {"limit": "ten"}},
            "settings.limit: Input should be a valid integer",
        ),
        (
            {"model": CHECKPOINT, "benchmarks": ["gsm8k"], "destination": {"project": "../etc"}},
            "destination.project: '../etc' is not a project name",
        ),
        (
            {"model": {"base_url": "http://h", "model": "m"}, "benchmarks": ["gsm8k"], "resources": {"gpus": 1}},
            "resources.gpus must be 0 for a hosted model",
        ),
    ],
)
def test_bad_specs_name_field_and_fix(data, expected):
    assert any(p.startswith(expected) or expected in p for p in problems(data)), problems(data)


def test_every_problem_is_reported_at_once():
    found = problems({"model": CHECKPOINT, "benchmarks": ["nope"], "settings": {"limit": -5, "temperature": 9}})
    assert [p.split(":")[0] for p in found] == ["benchmarks", "settings.limit", "settings.temperature"]


def test_score_hash_ignores_transport_settings():
    base = Settings(limit=10)
    assert base.score_hash() == Settings(limit=10, concurrency=1, max_retries=2).score_hash()
    assert base.score_hash() != Settings(limit=11).score_hash()
    assert base.score_hash() != Settings(limit=10, num_fewshot=0).score_hash()


def test_artifact_reference_is_recognised():
    spec = JobSpec.parse({"model": {"checkpoint": "team/models/smol:v3"}, "benchmarks": ["gsm8k"]})
    assert spec.model.is_artifact and spec.model.display_name == "team/models/smol:v3"
