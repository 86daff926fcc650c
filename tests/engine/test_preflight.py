"""Bad jobs fail before any server starts, with a message that says what to change."""

import json
import shutil

import pytest

from evaljobs.engine import preflight
from evaljobs.engine.errors import PreflightError, SpecError
from evaljobs.engine.job import run_job
from evaljobs.engine.serving import free_port
from evaljobs.engine.spec import JobSpec


def spec(**model) -> JobSpec:
    return JobSpec.parse({"model": model, "benchmarks": ["gsm8k_local"], "settings": {"limit": 2}})


def test_unreachable_endpoint():
    port = free_port()
    with pytest.raises(PreflightError, match=f"model.base_url http://127.0.0.1:{port}/v1 is unreachable"):
        preflight.run(spec(base_url=f"http://127.0.0.1:{port}", model="m"))


def test_missing_secret_is_named_with_the_fix():
    with pytest.raises(PreflightError) as info:
        preflight.run(spec(base_url="http://127.0.0.1:9", model="m", api_key_secret="TEAM_KEY"), secrets={})
    assert "secret TEAM_KEY (model.api_key_secret) is not set" in str(info.value)
    assert "export TEAM_KEY=" in str(info.value)


def test_hosted_models_cannot_take_log_likelihood_benchmarks():
    job = JobSpec.parse(
        {
            "model": {"base_url": "http://127.0.0.1:9", "model": "m"},
            "benchmarks": ["gsm8k_local", "arc_challenge_local"],
        }
    )
    with pytest.raises(PreflightError, match="benchmarks arc_challenge_local are scored by log-likelihood"):
        preflight.run(job)


def test_unloadable_checkpoint_fails_before_serving(tmp_path):
    folder = tmp_path / "empty-model"
    folder.mkdir()
    job = JobSpec.parse(
        {
            "model": {"checkpoint": str(folder)},
            "benchmarks": ["gsm8k_local"],
            "destination": {"results_home": str(tmp_path / "home")},
        }
    )
    with pytest.raises(PreflightError, match="cannot be loaded by vLLM"):
        run_job(job, log=lambda _: None)
    assert not (tmp_path / "home" / "jobs").exists()  # no server was started, no work folder made


def test_bad_custom_benchmarks_are_all_reported(tmp_path):
    (tmp_path / "a.yaml").write_text("name: a\ntype: generate\ndata: none.jsonl\nprompt: x\nanswer: y\n")
    with pytest.raises(SpecError) as info:
        preflight.load_benchmarks([str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")])
    assert len(info.value.problems) == 2
    assert "a.yaml: data:" in info.value.problems[0] and "b.yaml: (file): no such file" in info.value.problems[1]


def test_context_size_and_chat_template_limits(model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors", "chat_template.jinja"))
    (folder / "model.safetensors").symlink_to(model_dir / "model.safetensors")
    job = JobSpec.parse(
        {
            "model": {"checkpoint": str(folder)},
            "benchmarks": ["gsm8k_local"],
            "settings": {"chat_template": True},
            "resources": {"max_model_len": 16384, "max_model_gb": 0.1},
        }
    )
    with pytest.raises(PreflightError) as info:
        preflight.run(job)
    message = str(info.value)
    assert "resources.max_model_len 16384 exceeds the model's context (8192)" in message
    assert "over the 0.1 GB limit (resources.max_model_gb)" in message
    assert "settings.chat_template is on but the checkpoint has no chat template" in message
    config = json.loads((folder / "config.json").read_text())
    assert config["max_position_embeddings"] == 8192


def test_artifact_checkpoints_are_refused_with_the_workaround():
    with pytest.raises(PreflightError, match="download it \\(wandb artifact get\\) and give the folder"):
        preflight.run(spec(checkpoint="team/models/smol:v3"))


HF_PROBE = """
import sys
from evaljobs.engine.errors import PreflightError
from evaljobs.engine.preflight import checkpoint_folder
from evaljobs.engine.spec import ModelSource
try:
    print(checkpoint_folder(ModelSource(checkpoint=sys.argv[1])).path)
except PreflightError as exc:
    print("ERROR", exc)
"""


def test_hugging_face_repo_from_a_preseeded_offline_cache(model_dir, tmp_path):
    """Air-gapped clusters mount a pre-seeded HF cache; `org/name` then resolves with HF_HUB_OFFLINE=1."""
    import os
    import subprocess
    import sys

    repo = tmp_path / "hf" / "hub" / "models--acme--smol"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    for path in model_dir.iterdir():
        (snapshot / path.name).symlink_to(path)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}

    def resolve(ref):
        return subprocess.run(
            [sys.executable, "-c", HF_PROBE, ref], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()

    assert resolve("acme/smol") == str(snapshot)
    missing = resolve("acme/absent")
    assert missing.startswith("ERROR checkpoint 'acme/absent': cannot get this Hugging Face repo")
    assert "pre-seed the HF cache" in missing
    spec = JobSpec.parse({"model": {"checkpoint": "acme/smol"}, "benchmarks": ["gsm8k"]})
    assert (spec.model.checkpoint_kind, spec.model.display_name) == ("hf_repo", "acme/smol")


def hosted_job(benchmarks, **more) -> JobSpec:
    model = {"base_url": f"http://127.0.0.1:{free_port()}", "model": "m"} | more.pop("model", {})
    return JobSpec.parse({"model": model, "benchmarks": benchmarks} | more)


@pytest.fixture
def no_nltk_data(monkeypatch, tmp_path):
    """NLTK finds no data except under what a test adds (a developer's ~/nltk_data is hidden)."""
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "no-nltk-data")])


def test_every_problem_is_reported_at_once_each_with_its_fix(model_dir, no_nltk_data):
    job = hosted_job(["gpqa_diamond", "lingoly", "ifeval"], model={"api_key_secret": "TEAM_KEY"})
    with pytest.raises(PreflightError) as info:
        preflight.run(job, secrets={})
    problems = info.value.problems
    assert len(problems) == 4, problems
    assert problems[0].startswith("benchmarks gpqa_diamond are scored by log-likelihood")
    assert problems[1].startswith("benchmark ifeval scores with NLTK data that is not installed")
    assert "python -m nltk.downloader -d ~/nltk_data punkt_tab" in problems[1]
    assert problems[2] == (
        "secret TEAM_KEY (model.api_key_secret) is not set; add it as a team secret (Airflow: a Variable or a "
        "Connection of that name; locally: export TEAM_KEY=...)"
    )
    assert problems[3] == (
        "secret HF_TOKEN (datasets.hf_token_secret: gated gpqa_diamond, lingoly) is not set; add it as a team "
        "secret (Airflow: a Variable or a Connection of that name; locally: export HF_TOKEN=...)"
    )
    assert str(info.value).startswith("the job cannot start (4 problems):\n  - benchmarks gpqa_diamond are")

    checkpoint = JobSpec.parse(
        {
            "model": {"checkpoint": str(model_dir)},
            "benchmarks": ["gsm8k_local", "lingoly"],
            "resources": {"max_model_gb": 0.001},
            "datasets": {"hf_token_secret": "TEAM_HF"},
        }
    )
    with pytest.raises(PreflightError) as info:
        preflight.run(checkpoint, secrets={})
    assert [p.split(" (")[0] for p in info.value.problems] == ["secret TEAM_HF", "the model needs 0.6 GB"]


def test_a_mirrored_gated_dataset_needs_no_token(tmp_path):
    (tmp_path / "mirror" / "ambean" / "lingOly").mkdir(parents=True)
    job = hosted_job(["lingoly"], datasets={"mirror": str(tmp_path / "mirror")})
    with pytest.raises(PreflightError) as info:
        preflight.run(job, secrets={})
    [problem] = info.value.problems
    assert " is unreachable " in problem  # the token is not asked for; only the dead endpoint is left
    [lingoly] = preflight.load_benchmarks(["lingoly"], tmp_path / "mirror")
    assert lingoly.task_config() == {"task": "lingoly_context", "dataset_path": str(tmp_path / "mirror/ambean/lingOly")}


def test_nltk_data_is_found_in_the_mirror(tmp_path, no_nltk_data):
    [ifeval] = preflight.load_benchmarks(["ifeval"])
    assert "not installed (tokenizers/punkt_tab/english)" in preflight.nltk_problem(ifeval, tmp_path)
    (tmp_path / "nltk_data" / "tokenizers" / "punkt_tab" / "english").mkdir(parents=True)
    assert preflight.nltk_problem(ifeval, tmp_path) is None


def test_judge_scored_benchmarks_need_a_judge_other_than_the_model_under_test():
    from evaljobs.engine.catalog import Benchmark

    simpleqa = Benchmark(name="simpleqa", category="knowledge", judge=True)
    job = hosted_job(["gsm8k_local"], model={"api_key_secret": "TEAM_KEY"})
    assert preflight.needed_secrets(job, [simpleqa]) == {
        "TEAM_KEY": "model.api_key_secret",
        "OPENAI_API_KEY": "judge.api_key_secret: simpleqa",
    }
    assert preflight.rule_problems(job, [simpleqa]) == []
    itself = {"model": job.model.model, "base_url": job.model.base_url, "api_key_secret": "TEAM_KEY"}
    job = hosted_job(["gsm8k_local"], model={"base_url": job.model.base_url, "api_key_secret": "TEAM_KEY"},
                     judge=itself)  # fmt: skip
    [problem] = preflight.rule_problems(job, [simpleqa])
    assert problem.startswith("judge: the judge of simpleqa is the model under test (m at http://127.0.0.1:")
    assert problem.endswith("or set judge.allow_model_under_test: true")
    allowed = job.model_copy(update={"judge": job.judge.model_copy(update={"allow_model_under_test": True})})
    assert preflight.rule_problems(allowed, [simpleqa]) == []
    assert preflight.needed_secrets(allowed, [simpleqa]) == {"TEAM_KEY": "model.api_key_secret"}
