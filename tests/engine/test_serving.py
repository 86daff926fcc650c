"""The real vLLM server: command line, readiness, failures with their log, authentication, clean stop."""

import json
import shutil

import httpx
import pytest

from evaljobs.engine import serving
from evaljobs.engine.errors import ServingError
from evaljobs.engine.spec import Resources


def test_command_line_from_resources():
    command = serving.vllm_command("/m", "smol", Resources(gpus=2, max_model_len=4096, dtype="bfloat16"), 8000, "py")
    assert command[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--tensor-parallel-size") + 1] == "2"
    assert command[command.index("--max-model-len") + 1] == "4096"
    assert command[command.index("--dtype") + 1] == "bfloat16"
    assert "--enforce-eager" not in command and "--kv-cache-memory-bytes" not in command
    cpu = serving.vllm_command("/m", "smol", Resources(), 8000, "py")
    assert cpu[cpu.index("--dtype") + 1] == "float32" and "--enforce-eager" in cpu
    assert cpu[cpu.index("--kv-cache-memory-bytes") + 1] == str(2 * 2**30)


def test_server_requires_its_key_and_never_logs_it(vllm_server, api_key):
    root = vllm_server.base_url
    assert httpx.get(f"{root}/models", timeout=10).status_code == 401
    listed = httpx.get(f"{root}/models", headers={"Authorization": f"Bearer {api_key}"}, timeout=10).json()
    assert [m["id"] for m in listed["data"]] == ["smollm2"]
    assert api_key not in vllm_server.log_path.read_text()
    assert api_key not in " ".join(vllm_server.process.args)


def test_a_server_that_cannot_start_reports_its_log(model_dir, tmp_path):
    folder = tmp_path / "alien"
    shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "model.safetensors").symlink_to(model_dir / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["NoSuchModelForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ServingError) as info:
        serving.start(folder, "alien", Resources(startup_timeout=300), tmp_path / "log")
    message = str(info.value)
    assert message.startswith("vLLM exited with code")
    assert "NoSuchModelForCausalLM" in message  # the tail of vLLM's own log says why


def test_stop_leaves_no_process(model_dir, tmp_path):
    server = serving.start(model_dir, "smol", Resources(max_model_len=512), tmp_path)
    server.stop()
    server.stop()  # idempotent
    assert server.process.returncode is not None  # our child is reaped
    assert not serving.group_alive(server.process.pid)  # nothing of its group (engine core, workers) runs
