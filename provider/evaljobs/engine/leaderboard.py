"""The leaderboard of a project: rows = models, columns = benchmarks' primary metrics, plus a normalised
average (random baseline -> 0, perfect -> 100, clipped at 0), as the Open LLM Leaderboard computes it.

Each score and the normalised average carry a 95 % CI from the per-example scores (:mod:`stats`), when the
results' bundles are local and the engine's statistics libraries are installed; else the CI columns are empty.
Models that cannot be told apart from the model leading the tier above share its tier (the rule:
:func:`compare.tiers`).

A benchmark made of subtasks is normalised per subtask, then averaged. Results are only compared when they
were obtained with the same score-relevant settings: a model evaluated with other settings (another limit,
few-shot count, ...) is another row, labelled with what differs.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaljobs.engine.results import ResultRow


def normalise(score: float, baseline: float) -> float:
    """Map ``baseline`` (random guessing) to 0 and 1.0 to 100; below the baseline is 0."""
    if baseline >= 1.0:
        return 0.0
    return max(0.0, (score - baseline) / (1.0 - baseline)) * 100.0


def normalised_score(row: ResultRow) -> float:
    """The row's normalised score; with subtasks, the mean of the subtasks' normalised scores."""
    return normalised_of(row.score, row.baseline, row.subscores)


def normalised_of(score: float, baseline: float, subscores: dict[str, float]) -> float:
    if subscores:
        return sum(normalise(s, baseline) for s in subscores.values()) / len(subscores)
    return normalise(score, baseline)


@dataclass
class Entry:
    """One row: a model under one set of score-relevant settings."""

    model: str
    settings_hash: str = ""
    variant: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    normalised: dict[str, float] = field(default_factory=dict)
    evaluated_at: str = ""
    rank: int = 0
    score_ci: dict[str, Any] = field(default_factory=dict)  # benchmark -> stats.Estimate of the score, or None
    normalised_ci: dict[str, Any] = field(default_factory=dict)  # benchmark -> stats.Estimate, or None
    tier: int | None = None  # models that cannot be told apart share a tier (compare.tiers); None: unknown
    rows: dict[str, ResultRow] = field(default_factory=dict, repr=False)  # benchmark -> its result row

    @property
    def average(self) -> float:
        return sum(self.normalised.values()) / len(self.normalised) if self.normalised else 0.0

    @property
    def average_ci(self) -> tuple[float, float] | None:
        """The normalised average's 95 % CI, when every benchmark of the row has one."""
        if not self.normalised_ci or any(self.normalised_ci.get(b) is None for b in self.normalised):
            return None
        from evaljobs.engine import stats

        estimate = stats.average_ci([self.normalised_ci[b] for b in self.normalised])
        return (estimate.ci_low, estimate.ci_high) if estimate else None

    @property
    def label(self) -> str:
        return f"{self.model} [{self.variant}]" if self.variant else self.model


@dataclass
class Leaderboard:
    project: str
    benchmarks: list[str]
    entries: list[Entry]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "columns": self.benchmarks,
            "variants": self.variants,
            "rows": [
                {
                    "rank": e.rank,
                    "tier": e.tier,
                    "model": e.model,
                    "variant": e.variant,
                    "settings_hash": e.settings_hash,
                    "average": round(e.average, 4),
                    "benchmarks": len(e.scores),
                    "scores": e.scores,
                    "normalised": {k: round(v, 4) for k, v in e.normalised.items()},
                    "evaluated_at": e.evaluated_at,
                    "average_ci": _rounded(e.average_ci),
                    "ci": {k: _interval(v) for k, v in e.score_ci.items()},
                    "normalised_ci": {k: _interval(v) for k, v in e.normalised_ci.items()},
                }
                for e in self.entries
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        bounds = [f"{b}_{end}" for b in self.benchmarks for end in ("ci_low", "ci_high")]
        head = ["rank", "model", "variant", "average", "benchmarks", "evaluated_at", *self.benchmarks]
        writer.writerow([*head, "average_ci_low", "average_ci_high", *bounds, "tier"])  # after the earlier columns
        for e in self.entries:
            scores = (_cell(e.scores.get(b)) for b in self.benchmarks)
            cis = [_cell(x) for b in self.benchmarks for x in (_interval(e.score_ci.get(b)) or (None, None))]
            average = [_cell(x) for x in e.average_ci or (None, None)]
            row = [e.rank, e.model, e.variant, f"{e.average:.4f}", len(e.scores), e.evaluated_at, *scores]
            writer.writerow([*row, *average, *cis, "" if e.tier is None else e.tier])
        return out.getvalue()

    def to_text(self) -> str:
        header = ["#", "model", "tier", "avg (norm.)", "n", *self.benchmarks]
        body = [
            [str(e.rank), e.label, "-" if e.tier is None else str(e.tier), f"{e.average:.1f}", str(len(e.scores))]
            + [_cell(e.scores.get(b), 3) for b in self.benchmarks]
            for e in self.entries
        ]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            for row in [header, *body]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return f"Leaderboard of project {self.project!r}\n" + "\n".join(lines)


def build(project: str, rows: Iterable[ResultRow], intervals: str = "compute", tiers: bool = True) -> Leaderboard:
    """The leaderboard from a project's rows (oldest first: a newer result of a model/benchmark wins), with
    CIs when the statistics libraries are installed: ``intervals`` "compute" reads the bundles whose CIs are
    not cached yet, "cached" only takes cached ones, "none" leaves them out (and the tiers). ``tiers`` reads
    every bundle's per-example scores (cached per bundle) to pair the models' examples.

    Rows are ranked by benchmarks covered, then normalised average; equal rows share a rank (1, 2, 2, 4)."""
    import importlib.util

    if intervals != "none" and importlib.util.find_spec("statsmodels") is None:
        intervals = "none"
    if intervals != "none":
        from evaljobs.engine import stats
    entries: dict[tuple[str, str], Entry] = {}
    settings: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = entries.setdefault((row.model, row.settings_hash), Entry(row.model, row.settings_hash))
        entry.scores[row.benchmark] = row.score
        entry.rows[row.benchmark] = row
        entry.normalised[row.benchmark] = normalised_score(row)
        if intervals != "none":
            entry.score_ci[row.benchmark], entry.normalised_ci[row.benchmark] = stats.intervals(
                row, entry.normalised[row.benchmark], compute=intervals == "compute"
            )
        entry.evaluated_at = max(entry.evaluated_at, row.recorded_at)
        settings.setdefault(row.settings_hash, row.settings)
    variants = _variants(settings) if len(settings) > 1 else {}
    for entry in entries.values():
        entry.variant = variants.get(entry.settings_hash, "")
    ranked = sorted(entries.values(), key=lambda e: (*_standing(e), e.model, e.variant))
    for position, entry in enumerate(ranked):
        before = ranked[position - 1] if position else None
        entry.rank = before.rank if before and _standing(before) == _standing(entry) else position + 1
    if intervals != "none" and tiers:
        from evaljobs.engine import compare

        for entry, tier in zip(ranked, compare.tiers(ranked), strict=True):
            entry.tier = tier
    benchmarks = sorted({b for e in ranked for b in e.scores})
    described = {h: settings[h] for h in variants}
    return Leaderboard(project, benchmarks, ranked, described)


def _standing(entry: Entry) -> tuple[int, float]:
    return -len(entry.scores), -round(entry.average, 9)


def _variants(settings: dict[str, dict[str, Any]]) -> dict[str, str]:
    """A short label per settings hash: the settings whose values differ between the project's rows."""
    keys = sorted({k for s in settings.values() for k in s})
    differing = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True) for s in settings.values()}) > 1]
    labels = {}
    for settings_hash, values in settings.items():
        shown = [f"{k}={_short(values.get(k))}" for k in differing if k in values]
        labels[settings_hash] = ", ".join(shown) if shown else f"settings {settings_hash}"
    return labels


def _short(value: Any) -> str:
    text = "default" if value is None else str(value)
    return text if len(text) <= 24 else text[:21] + "..."


def write(board: Leaderboard, results_home: Path) -> None:
    """Write ``board`` as JSON and CSV under ``<results home>/leaderboards/``."""
    from evaljobs.engine.results import slug, write_text

    write_text(results_home / "leaderboards" / f"{slug(board.project)}.json", board.to_json() + "\n")
    write_text(results_home / "leaderboards" / f"{slug(board.project)}.csv", board.to_csv())


@contextmanager
def publishing(project: str, results_home: Path) -> Iterator[None]:
    """Hold the project's publishing lock (an exclusive ``flock`` on ``<results home>/leaderboards/.<project>.lock``,
    released when the holder ends, even by SIGKILL). Jobs that publish at once take turns: the last one reads
    every row recorded before it, and one job at a time writes the files and the W&B leaderboard run."""
    import fcntl

    from evaljobs.engine.results import slug

    folder = Path(results_home) / "leaderboards"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f".{slug(project)}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _interval(estimate: Any) -> list[float] | None:
    return None if estimate is None or estimate.ci_low is None else _rounded((estimate.ci_low, estimate.ci_high))


def _rounded(bounds: tuple[float, float] | None) -> list[float] | None:
    return None if bounds is None else [round(bounds[0], 6), round(bounds[1], 6)]


def _cell(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
