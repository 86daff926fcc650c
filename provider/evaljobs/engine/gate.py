"""Promotion gates: does a project's leaderboard hold results for a model, and do they meet a condition?

Two modes. ``threshold`` compares point estimates (least average, worst rank, a delta over a baseline).
``statistical`` releases only on evidence, from the paired comparison of :mod:`compare` on the same examples:
1. the model is better than ``baseline_model`` by more than ``min_delta`` points of normalised average: the
   one-sided z test of the paired delta (H0: delta <= min_delta) has p < ``alpha``;
2. and no benchmark is significantly worse than the non-inferiority margin: per benchmark, the one-sided z test
   of H0: delta >= -``margin`` (normalised points) is not rejected at ``alpha`` after Holm's adjustment across
   the benchmarks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evaljobs.engine import leaderboard
from evaljobs.engine.objectstore import project_rows

MODES = ("threshold", "statistical")


@dataclass(frozen=True)
class Gate:
    """Released once ``model`` has results on ``benchmarks`` (all of the project's when empty) and, when set,
    its normalised average is at least ``min_average`` and its rank at most ``max_rank``; with
    ``baseline_model``, it beats it by ``min_delta`` points of normalised average on the same benchmarks: as
    point estimates (``mode="threshold"``) or significantly (``mode="statistical"``, see the module)."""

    project: str
    model: str
    benchmarks: tuple[str, ...] = ()
    min_average: float | None = None
    max_rank: int | None = None
    baseline_model: str | None = None
    min_delta: float = 0.0
    mode: str = "threshold"
    alpha: float = 0.05
    margin: float = 5.0  # statistical: the non-inferiority margin per benchmark, in normalised points

    def __post_init__(self) -> None:
        if self.max_rank is not None and self.max_rank < 1:
            raise ValueError(f"max_rank must be 1 or more, got {self.max_rank}")
        if self.min_average is not None and not 0 <= self.min_average <= 100:
            raise ValueError(f"min_average is a normalised score between 0 and 100, got {self.min_average}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.mode == "statistical" and not self.baseline_model:
            raise ValueError("mode 'statistical' compares with a baseline: set baseline_model")
        if not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha is a significance level between 0 and 0.5, got {self.alpha}")
        if self.margin < 0:
            raise ValueError(f"margin is a number of normalised points, 0 or more, got {self.margin}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"benchmarks": list(self.benchmarks)}


@dataclass(frozen=True)
class Verdict:
    released: bool
    reason: str
    average: float | None = None
    rank: int | None = None
    evidence: dict[str, Any] = field(default_factory=dict)  # statistical: the comparison's numbers
    decided: bool = False  # the conditions were checked on every result they need (not waiting for results)


def evaluate(gate: Gate, results_home: str | Path) -> Verdict:
    """Check ``gate`` against the results store under ``results_home`` (a folder, or an object-store URL whose rows
    and bundles are pulled into its local copy)."""
    rows = project_rows(results_home, gate.project)
    board = leaderboard.build(gate.project, rows, intervals="none")
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
        return Verdict(False, f"average {average:.2f} is below {gate.min_average}", average, rank, decided=True)
    if gate.max_rank is not None and rank > gate.max_rank:
        return Verdict(False, f"rank {rank} is worse than {gate.max_rank}", average, rank, decided=True)
    if gate.baseline_model is not None:
        if gate.baseline_model not in entries:
            return Verdict(False, f"no results for the baseline {gate.baseline_model}", average, rank)
        base = entries[gate.baseline_model][1]
        if any(b not in base.scores for b in wanted):
            return Verdict(
                False, f"the baseline {gate.baseline_model} lacks some of {', '.join(wanted)}", average, rank
            )
        if gate.mode == "statistical":
            return _significant(gate, rows, wanted, average, rank)
        delta = average - sum(base.normalised[b] for b in wanted) / len(wanted)
        if delta < gate.min_delta:
            reason = f"beats {gate.baseline_model} by {delta:.2f}, needs {gate.min_delta}"
            return Verdict(False, reason, average, rank, decided=True)
    return Verdict(True, f"{gate.model}: average {average:.2f}, rank {rank}", average, rank, decided=True)


def _significant(gate: Gate, rows: list, wanted: list[str], average: float, rank: int) -> Verdict:
    """The statistical mode's verdict (see the module), with the numbers it rests on as ``evidence``."""
    from scipy.stats import norm
    from statsmodels.stats.multitest import multipletests

    from evaljobs.engine.compare import ComparisonError, compare, z_test

    try:
        result = compare(rows, gate.model, gate.baseline_model, wanted, gate.project)
    except ComparisonError as exc:
        return Verdict(False, f"cannot compare with {gate.baseline_model}: {exc}", average, rank, decided=True)
    if result.not_compared:
        why = "; ".join(f"{b}: {w}" for b, w in result.not_compared.items())
        reason = f"cannot compare with {gate.baseline_model} on every benchmark: {why}"
        return Verdict(False, reason, average, rank, decided=True)
    o = result.overall
    if o["se"] is None:
        return Verdict(False, "no standard error for the normalised average's delta", average, rank, decided=True)
    p_better = z_test(o["delta"], o["se"], gate.min_delta)[1]
    worse = [
        float(norm.cdf((r.normalised_delta + gate.margin) / r.normalised_se))
        if r.normalised_se
        else float(r.normalised_delta < -gate.margin)
        for r in result.benchmarks
    ]
    worse_adjusted = multipletests(worse, method="holm")[1]
    evidence = {
        "baseline": gate.baseline_model,
        "delta": o["delta"],
        "ci_low": o["ci_low"],
        "ci_high": o["ci_high"],
        "p_better": p_better,
        "alpha": gate.alpha,
        "min_delta": gate.min_delta,
        "margin": gate.margin,
        "mde": result.mde["normalised_average"],
        "benchmarks": [
            {
                "benchmark": r.benchmark,
                "n": r.n,
                "normalised_delta": r.normalised_delta,
                "p_worse": p,
                "p_worse_adjusted": float(q),
            }
            for r, p, q in zip(result.benchmarks, worse, worse_adjusted, strict=True)
        ],
    }
    vs = (
        f"{gate.model} - {gate.baseline_model}: {o['delta']:+.2f} points of normalised average "
        f"(95% CI [{o['ci_low']:+.2f}, {o['ci_high']:+.2f}], one-sided p = {p_better:.3g} for > {gate.min_delta})"
    )
    if p_better >= gate.alpha:
        return Verdict(False, f"not significantly better: {vs}, alpha {gate.alpha}", average, rank, evidence, True)
    if failing := [b["benchmark"] for b in evidence["benchmarks"] if b["p_worse_adjusted"] < gate.alpha]:
        return Verdict(
            False,
            f"significantly worse than the margin of -{gate.margin} points on {', '.join(failing)} (Holm); {vs}",
            average,
            rank,
            evidence,
            True,
        )
    reason = f"significantly better: {vs}; no benchmark worse than -{gate.margin} (Holm)"
    return Verdict(True, reason, average, rank, evidence, True)
