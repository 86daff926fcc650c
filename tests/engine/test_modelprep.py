import json
import shutil
import struct

import pytest

from evaljobs.engine.errors import PreflightError
from evaljobs.engine.modelprep import check_folder, safetensors_bytes


def test_prepared_smollm2_is_loadable(model_dir):
    folder = check_folder(model_dir)
    assert folder.architecture == "LlamaForCausalLM"
    assert folder.has_chat_template
    shard = model_dir / "model.safetensors"
    (header_len,) = struct.unpack("<Q", shard.open("rb").read(8))
    # Weight bytes come from the header alone and must account for every byte after it.
    assert folder.weight_bytes == shard.stat().st_size - 8 - header_len
    config = json.loads((model_dir / "config.json").read_text())
    assert (
        folder.kv_cache_bytes(1000) == 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * 64 * 1000 * 2
    )


def test_missing_parts_are_listed_together(model_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(model_dir / "config.json", broken)
    (broken / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(PreflightError) as info:
        check_folder(broken)
    message = str(info.value)
    assert "no *.safetensors weights (found .bin: pytorch_model.bin)" in message
    assert "no tokenizer file" in message
    assert "config.json is missing" not in message


def test_not_a_safetensors_file(tmp_path):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(struct.pack("<Q", 4) + b"nope")
    with pytest.raises(ValueError, match="header is not JSON"):
        safetensors_bytes(bad)


def test_architecture_required(model_dir, tmp_path):
    folder = tmp_path / "noarch"
    shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    (folder / "model.safetensors").symlink_to(model_dir / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    del config["architectures"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(PreflightError, match='config.json has no "architectures"'):
        check_folder(folder)
