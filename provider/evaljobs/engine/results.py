"""The local results store and result bundles, under a results home.

Rows live in one SQLite file (WAL mode, one transaction a write), keyed by (project, model, benchmark,
settings hash): a re-run replaces its row instead of adding one, and any number of jobs may write at once.
Bundles (metrics JSON + per-example JSONL) are written to a temporary file and renamed into place, so a
killed job never leaves a half-written bundle.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    project TEXT NOT NULL,
    model TEXT NOT NULL,
    benchmark TEXT NOT NULL,
    settings_hash TEXT NOT NULL,
    job_id TEXT NOT NULL,
    category TEXT NOT NULL,
    metric TEXT NOT NULL,
    score REAL NOT NULL,
    baseline REAL NOT NULL,
    n_samples INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    bundle TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    settings TEXT NOT NULL DEFAULT '{}',
    subscores TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (project, model, benchmark, settings_hash)
)
"""
# Columns added after the first release, with their defaults: older stores gain them on first use.
ADDED_COLUMNS = {"settings": "'{}'", "subscores": "'{}'"}
JSON_COLUMNS = ("metrics", "settings", "subscores")


@dataclass(frozen=True)
class ResultRow:
    """One (model, benchmark, settings) result of a project."""

    project: str
    model: str
    benchmark: str
    settings_hash: str
    job_id: str
    category: str
    metric: str
    score: float
    baseline: float
    n_samples: int
    metrics: dict[str, float]
    bundle: str
    recorded_at: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    subscores: dict[str, float] = field(default_factory=dict)


class ResultsStore:
    """Results of every project under one results home."""

    def __init__(self, home: str | Path):
        self.home = Path(home).expanduser()
        self.path = self.home / "results.sqlite"

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.home.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=60000")
            conn.execute(SCHEMA)
            present = {r[1] for r in conn.execute("PRAGMA table_info(results)")}
            for column, default in ADDED_COLUMNS.items():
                if column not in present:
                    with suppress(sqlite3.OperationalError):  # another process added it first
                        conn.execute(f"ALTER TABLE results ADD COLUMN {column} TEXT NOT NULL DEFAULT {default}")
            yield conn
        finally:
            conn.close()

    def record(self, row: ResultRow) -> ResultRow:
        """Insert ``row``, replacing an earlier result with the same key."""
        row = ResultRow(**{**asdict(row), "recorded_at": row.recorded_at or datetime.now(UTC).isoformat()})
        values = asdict(row)
        values |= {c: json.dumps(values[c], sort_keys=True, default=str) for c in JSON_COLUMNS}
        columns = ", ".join(values)
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                f"INSERT OR REPLACE INTO results ({columns}) VALUES ({', '.join('?' * len(values))})",
                tuple(values.values()),
            )
            conn.execute("COMMIT")
        return row

    def rows(self, project: str | None = None) -> list[ResultRow]:
        """All rows (of ``project``), oldest first."""
        query, args = "SELECT * FROM results", ()
        if project is not None:
            query, args = query + " WHERE project = ?", (project,)
        if not self.path.exists():
            return []
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            found = conn.execute(query + " ORDER BY recorded_at", args).fetchall()
        return [ResultRow(**(dict(r) | {c: json.loads(r[c]) for c in JSON_COLUMNS})) for r in found]

    def bundle_dir(self, project: str, model: str, benchmark: str, settings_hash: str) -> Path:
        return self.home / "bundles" / slug(project) / slug(model) / slug(benchmark) / settings_hash


def slug(name: str) -> str:
    """A file-name-safe form of a project, model or benchmark name (no separators, no '..')."""
    cleaned = re.sub(r"[^\w.-]+", "_", name).strip("._") or "_"
    return cleaned[:120]


def write_json(path: Path, data: Any) -> None:
    _atomic_write(path, [json.dumps(data, indent=2, sort_keys=True, default=str) + "\n"])


def write_cache(path: Path, data: Any) -> None:
    """A cache file (compact JSON): replaced atomically, not synced to disk (lost with the machine, rebuilt)."""
    _atomic_write(path, [json.dumps(data, separators=(",", ":"), default=str)], durable=False)


def write_text(path: Path, text: str) -> None:
    _atomic_write(path, [text])


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    _atomic_write(path, (json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records))


def write_bytes(path: Path, data: bytes) -> None:
    _atomic_write(path, [data], binary=True)


def _atomic_write(
    path: Path, chunks: Iterable[str] | Iterable[bytes], binary: bool = False, durable: bool = True
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results and reports are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
