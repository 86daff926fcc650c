"""A test-only reader of wandb's ``.wandb`` record log (wandb 0.31 has no Python reader any more).

The file is a 7-byte header (``:W&B``, magic 0xBEE1 little endian, version 0) followed by the LevelDB log
format: 32 KiB blocks (the header counts in the first), each chunk a 4-byte CRC-32C, a 2-byte length and a
1-byte type (1 full, 2 first, 3 middle, 4 last); a block remainder shorter than a chunk header is padding.
Each payload is a ``wandb_internal_pb2.Record``. CRCs are not checked.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK_HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(data: bytes) -> Iterator[bytes]:
    """The records' bytes, reassembled from chunks."""
    if not data.startswith(HEADER):
        raise ValueError(f"not a .wandb file (header {data[:7]!r})")
    pos, pending = len(HEADER), b""
    while pos + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, pos)
        body = data[pos + CHUNK_HEADER : pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        if kind == FULL:
            yield body
        elif kind == FIRST:
            pending = body
        elif kind == MIDDLE:
            pending += body
        elif kind == LAST:
            yield pending + body
            pending = b""
        else:
            raise ValueError(f"bad chunk type {kind} at byte {pos}")


def records(path: Path) -> Iterator[pb.Record]:
    for payload in payloads(Path(path).read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        yield record


@dataclass
class RunLog:
    """What a run wrote: its run record, config, final summary, history rows, artifacts and inputs."""

    run: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    used_artifacts: list[str] = field(default_factory=list)
    exit_code: int | None = None
    internal: dict[str, Any] = field(default_factory=dict)  # config["_wandb"]: chart specs, telemetry


def read_run(run_dir: Path) -> RunLog:
    """Read the single ``run-*.wandb`` file of a run folder."""
    (path,) = Path(run_dir).glob("run-*.wandb")
    log = RunLog()
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            log.run = {
                "id": r.run_id,
                "project": r.project,
                "entity": r.entity,
                "group": r.run_group,
                "job_type": r.job_type,
                "name": r.display_name,
            }
            _apply(log.config, r.config.update, r.config.remove)
        elif kind == "config":
            _apply(log.config, record.config.update, record.config.remove)
        elif kind == "summary":
            _apply(log.summary, record.summary.update, record.summary.remove)
        elif kind == "history":
            log.history.append({_key(item): _value(item) for item in record.history.item})
        elif kind == "artifact":
            a = record.artifact
            entries = {
                e.path: {"digest": e.digest, "size": e.size, "local_path": e.local_path} for e in a.manifest.contents
            }
            log.artifacts.append(
                {
                    "type": a.type,
                    "name": a.name,
                    "aliases": list(a.aliases),
                    "metadata": json.loads(a.metadata) if a.metadata else {},
                    "entries": entries,
                }
            )
        elif kind == "use_artifact":
            log.used_artifacts.append(record.use_artifact.name)
        elif kind == "exit":
            log.exit_code = record.exit.exit_code
    log.internal = log.config.pop("_wandb", {})
    return log


def _key(item: Any) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


def _value(item: Any) -> Any:
    return json.loads(item.value_json) if item.value_json else None


def _apply(target: dict[str, Any], updates: Any, removes: Any) -> None:
    """Apply config/summary update and remove items (``nested_key`` is a path into nested dicts)."""
    for item in updates:
        *parents, last = list(item.nested_key) or [item.key]
        node = target
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = _value(item)
    for item in removes:
        *parents, last = list(item.nested_key) or [item.key]
        node = target
        for name in parents:
            node = node.get(name, {})
        node.pop(last, None)


def table_rows(run_dir: Path, key: str) -> list[dict[str, Any]]:
    """The rows of the one Table the run logged under ``key``, read from its file in the run folder."""
    (entry,) = [row for row in read_run(run_dir).history if f"{key}/path" in row]
    table = json.loads((Path(run_dir) / "files" / entry[f"{key}/path"]).read_text(encoding="utf-8"))
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def run_folders(wandb_dir: Path) -> dict[str, list[Path]]:
    """The run folders under a ``wandb`` directory, by run id (from each folder's ``run-<id>.wandb`` file)."""
    folders: dict[str, list[Path]] = {}
    for folder in sorted(Path(wandb_dir).glob("*run-*")):
        if folder.is_dir() and not folder.is_symlink():
            for log in folder.glob("run-*.wandb"):
                folders.setdefault(log.stem.removeprefix("run-"), []).append(folder)
    return folders
