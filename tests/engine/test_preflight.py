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
