"""The leaderboard of a project: rows = models, columns = benchmarks' primary metrics, plus a normalised
average (random baseline -> 0, perfect -> 100, clipped at 0), as the Open LLM Leaderboard computes it.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from evaljobs.engine.results import ResultRow


def normalise(score: float, baseline: float) -> float:
    """Map ``baseline`` (random guessing) to 0 and 1.0 to 100; below the baseline is 0."""
    if baseline >= 1.0:
        return 0.0
    return max(0.0, (score - baseline) / (1.0 - baseline)) * 100.0


@dataclass
class Entry:
    model: str
    scores: dict[str, float] = field(default_factory=dict)
    normalised: dict[str, float] = field(default_factory=dict)

    @property
    def average(self) -> float:
        return sum(self.normalised.values()) / len(self.normalised) if self.normalised else 0.0


@dataclass
class Leaderboard:
    project: str
    benchmarks: list[str]
    entries: list[Entry]

    def as_dict(self) -> dict:
        return {
            "project": self.project,
            "benchmarks": self.benchmarks,
            "rows": [
                {
                    "rank": rank,
                    "model": e.model,
                    "average": round(e.average, 4),
                    "benchmarks": len(e.scores),
                    "scores": e.scores,
                    "normalised": {k: round(v, 4) for k, v in e.normalised.items()},
                }
                for rank, e in enumerate(self.entries, 1)
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["rank", "model", "average", *self.benchmarks])
        for rank, e in enumerate(self.entries, 1):
            writer.writerow([rank, e.model, f"{e.average:.4f}", *(_cell(e.scores.get(b)) for b in self.benchmarks)])
        return out.getvalue()

    def to_text(self) -> str:
        header = ["#", "model", "avg (norm.)", *self.benchmarks]
        body = [
            [str(rank), e.model, f"{e.average:.1f}", *(_cell(e.scores.get(b), 3) for b in self.benchmarks)]
            for rank, e in enumerate(self.entries, 1)
        ]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            for row in [header, *body]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return f"Leaderboard of project {self.project!r}\n" + "\n".join(lines)


def build(project: str, rows: list[ResultRow]) -> Leaderboard:
    """The leaderboard from a project's rows (oldest first: a newer result of a model/benchmark wins)."""
    entries: dict[str, Entry] = {}
    for row in rows:
        entry = entries.setdefault(row.model, Entry(row.model))
        entry.scores[row.benchmark] = row.score
        entry.normalised[row.benchmark] = normalise(row.score, row.baseline)
    benchmarks = sorted({b for e in entries.values() for b in e.scores})
    ranked = sorted(entries.values(), key=lambda e: (-len(e.scores), -e.average, e.model))
    return Leaderboard(project, benchmarks, ranked)


def publish(project: str, results_home: str | Path | None = None) -> dict:
    """Write the project's leaderboard as JSON and CSV under ``<results home>/leaderboards/``; return it."""
    from evaljobs.engine.results import ResultsStore, slug, write_text
    from evaljobs.engine.spec import default_results_home

    home = Path(results_home or default_results_home())
    board = build(project, ResultsStore(home).rows(project))
    write_text(home / "leaderboards" / f"{slug(project)}.json", board.to_json() + "\n")
    write_text(home / "leaderboards" / f"{slug(project)}.csv", board.to_csv())
    return board.as_dict()


def _cell(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
