"""Promotion gates: does a project's leaderboard hold results for a model, and do they meet a condition?"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evaljobs.engine import leaderboard
from evaljobs.engine.results import ResultsStore


@dataclass(frozen=True)
class Gate:
    """Released once ``model`` has results on ``benchmarks`` (all of the project's when empty) and, when set,
    its normalised average is at least ``min_average``, its rank at most ``max_rank``, and it beats
    ``baseline_model`` by at least ``min_delta`` points of normalised average on the same benchmarks."""

    project: str
    model: str
    benchmarks: tuple[str, ...] = ()
    min_average: float | None = None
    max_rank: int | None = None
    baseline_model: str | None = None
    min_delta: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"benchmarks": list(self.benchmarks)}


@dataclass(frozen=True)
class Verdict:
    released: bool
    reason: str
    average: float | None = None
    rank: int | None = None


def evaluate(gate: Gate, results_home: str | Path) -> Verdict:
    """Check ``gate`` against the results store under ``results_home``."""
    board = leaderboard.build(gate.project, ResultsStore(results_home).rows(gate.project), intervals="none")
    # A model evaluated under several settings has several rows: the gate looks at its newest.
    entries: dict[str, tuple[int, leaderboard.Entry]] = {}
    for entry in board.entries:
        if entry.model not in entries or entry.evaluated_at > entries[entry.model][1].evaluated_at:
            entries[entry.model] = (entry.rank, entry)
    if gate.model not in entries:
        return Verdict(False, f"no results yet for {gate.model} in project {gate.project}")
    rank, entry = entries[gate.model]
    wanted = list(gate.benchmarks) or board.benchmarks
    missing = [b for b in wanted if b not in entry.scores]
    if missing:
        return Verdict(False, f"{gate.model} has no results yet on {', '.join(missing)}", rank=rank)
    average = sum(entry.normalised[b] for b in wanted) / len(wanted)
    if gate.min_average is not None and average < gate.min_average:
        return Verdict(False, f"average {average:.2f} is below {gate.min_average}", average, rank)
    if gate.max_rank is not None and rank > gate.max_rank:
        return Verdict(False, f"rank {rank} is worse than {gate.max_rank}", average, rank)
    if gate.baseline_model is not None:
        if gate.baseline_model not in entries:
            return Verdict(False, f"no results for the baseline {gate.baseline_model}", average, rank)
        base = entries[gate.baseline_model][1]
        if any(b not in base.scores for b in wanted):
            return Verdict(
                False, f"the baseline {gate.baseline_model} lacks some of {', '.join(wanted)}", average, rank
            )
        delta = average - sum(base.normalised[b] for b in wanted) / len(wanted)
        if delta < gate.min_delta:
            return Verdict(False, f"beats {gate.baseline_model} by {delta:.2f}, needs {gate.min_delta}", average, rank)
    return Verdict(True, f"{gate.model}: average {average:.2f}, rank {rank}", average, rank)
