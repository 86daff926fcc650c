"""What every benchmark script shares: where results go, how a table is printed, how RSS is read.

Each script measures its scenario's figures side by side in one run (these machines are noisy: only ratios
taken in the same run are compared), prints a table and writes ``bench/out/<name>.json``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
if str(REPO) not in sys.path:  # the instruments live with the tests (tests/latency_endpoint.py)
    sys.path.insert(0, str(REPO))
os.environ.setdefault("EVALJOBS_HOME", str(REPO / ".evaljobs"))  # as the Makefile: the prepared model is there
os.environ.setdefault("EVALJOBS_VLLM_PYTHON", str(REPO / ".venv-vllm" / "bin" / "python"))
os.environ.setdefault("EVALJOBS_DATA_ROOT", str(REPO.parent / "shared" / "benchdata"))


def write(name: str, result: dict[str, Any]) -> Path:
    """Save ``result`` as bench/out/<name>.json and return the path."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def table(title: str, header: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table: numbers right-aligned, floats with two decimals (three below 1)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
        return "-" if value is None else str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = [
        title,
        "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))),
    ]
    for row in cells:
        lines.append(
            "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths, strict=True)))
        )
    text = "\n".join(lines)
    print(text + "\n", flush=True)
    return text


def task_yaml(name: str) -> str:
    """A catalog benchmark's compiled lm-eval task as YAML for ``lm_eval --include_path``: our sandboxed
    templates become their Jinja source, which lm-eval renders to the same prompts itself."""
    from evaljobs.engine import catalog
    from evaljobs.engine.custom import SandboxedTemplate

    def plain(value: Any) -> Any:
        if isinstance(value, SandboxedTemplate):
            return value.source
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return [plain(v) for v in value] if isinstance(value, list) else value

    import yaml

    return yaml.safe_dump(plain(catalog.load(name).task_config()))


def peak_rss_mib(pid: int | None = None) -> float:
    """Peak resident memory (VmHWM) of ``pid`` (default: this process) in MiB, from /proc."""
    status = Path(f"/proc/{pid or os.getpid()}/status").read_text()
    kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return kib / 1024
