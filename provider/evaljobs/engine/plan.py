"""Power before a run: the smallest difference a paired comparison can detect at a benchmark's sample size.

Per benchmark, n = the job's ``limit`` (capped at the benchmark's rows when known; all rows when 0) and the
minimum detectable difference (MDE) of the exact McNemar test at 80 % power, 5 % two-sided (:func:`stats.mde`),
scores taken as 0/1. It depends on the discordance rate: the share of examples two checkpoints answer
differently. Given (``discordance``), else observed on the project's earlier results (the mean share of the
baseline's examples that each other model of the project answered differently, same settings), else the
default :data:`stats.DEFAULT_DISCORDANCE`. The normalised average's MDE combines the benchmarks
(:func:`stats.mde_average`). A promotion gate's ``min_delta`` below it is flagged: a gate that cannot see the
difference it asks for promotes or refuses on noise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from evaljobs.engine import stats
from evaljobs.engine.errors import SpecError
from evaljobs.engine.results import ResultRow


@dataclass(frozen=True)
class Planned:
    benchmark: str
    n: int
    baseline: float  # the random baseline of the normalisation
    discordance: float
    source: str  # stated | observed (k models) | default
    mde: float | None  # in score (0-1); None: not detectable at all at 80 % power


@dataclass(frozen=True)
class Plan:
    benchmarks: list[Planned]
    normalised_average: float  # MDE in normalised points (0-100)
    min_delta: float | None = None

    @property
    def warning(self) -> str | None:
        if self.min_delta is None or self.min_delta >= self.normalised_average:
            return None
        return (
            f"min_delta {self.min_delta} is below what these sample sizes can detect: the minimum detectable "
            f"difference of the normalised average is {self.normalised_average:.1f} points (80 % power, 5 % "
            "two-sided); raise the limit or the min_delta"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmarks": [asdict(b) for b in self.benchmarks],
            "normalised_average_mde": self.normalised_average,
            "alpha": stats.ALPHA,
            "power": stats.POWER,
            "min_delta": self.min_delta,
            "warning": self.warning,
        }

    def to_text(self) -> str:
        lines = ["benchmark  n  discordance  MDE (points of score)"]
        for b in self.benchmarks:
            mde = "not detectable" if b.mde is None else f"{100 * b.mde:.1f}"
            lines.append(f"{b.benchmark}  {b.n}  {b.discordance:.2f} ({b.source})  {mde}")
        lines.append(
            f"normalised average: MDE {self.normalised_average:.1f} points (80 % power, 5 % two-sided, paired)"
        )
        return "\n".join(lines) + (f"\nWARNING: {self.warning}" if self.warning else "")


def plan(
    sizes: Sequence[tuple[str, int, float]],
    discordance: float | None = None,
    rows: Iterable[ResultRow] = (),
    baseline_model: str | None = None,
    min_delta: float | None = None,
) -> Plan:
    """The MDEs of benchmarks given as (name, n, random baseline); ``rows`` and ``baseline_model`` give the
    observed discordance (see the module)."""
    observed = _observed(list(rows), baseline_model) if discordance is None and baseline_model else {}
    planned = []
    for name, n, baseline in sizes:
        if discordance is not None:
            psi, source = discordance, "stated"
        elif name in observed:
            psi, source = observed[name][0], f"observed ({observed[name][1]} models)"
        else:
            psi, source = stats.DEFAULT_DISCORDANCE, "default"
        planned.append(Planned(name, n, baseline, psi, source, stats.mde(n, psi) if psi > 0 else None))
    average = stats.mde_average([(p.n, p.baseline, p.discordance or stats.DEFAULT_DISCORDANCE) for p in planned])
    return Plan(planned, average, min_delta)


def sizes(names: Sequence[str], limit: int) -> list[tuple[str, int, float]]:
    """(name, n, random baseline) of catalog benchmarks or custom files evaluated with ``limit``."""
    from evaljobs.engine import catalog

    found = []
    for name in names:
        benchmark = catalog.load(name)
        n = min(limit, benchmark.size) if limit and benchmark.size else limit or benchmark.size
        if not n:
            raise SpecError([f"benchmarks: the size of {name!r} is not known here; give a limit (examples each)"])
        found.append((benchmark.name, n, benchmark.baseline))
    return found


def _observed(rows: list[ResultRow], baseline_model: str) -> dict[str, tuple[float, int]]:
    """Benchmark -> (mean share of the baseline's examples each other model answered differently, models)."""
    from evaljobs.engine.compare import pairs

    newest: dict[tuple[str, str], ResultRow] = {}
    for row in rows:  # oldest first: the newest row of a (model, benchmark) wins
        newest[(row.model, row.benchmark)] = row
    shares: dict[str, list[float]] = {}
    for (model, benchmark), row in newest.items():
        base = newest.get((baseline_model, benchmark))
        if model == baseline_model or base is None or base.settings_hash != row.settings_hash:
            continue
        if matched := pairs(row, base):
            shares.setdefault(benchmark, []).append(sum(a != b for _, a, b in matched) / len(matched))
    return {b: (sum(v) / len(v), len(v)) for b, v in shares.items()}


def gate_warning(gate: Any, rows: Sequence[ResultRow]) -> str | None:
    """The warning of a gate whose ``min_delta`` is below what its baseline's sample sizes can detect (None
    without a baseline, its results or a min_delta)."""
    if not gate.baseline_model or not gate.min_delta:
        return None
    base = {r.benchmark: r for r in rows if r.model == gate.baseline_model}
    wanted = list(gate.benchmarks) or sorted(base)
    if not wanted or any(b not in base for b in wanted):
        return None
    found = [(b, base[b].n_samples, base[b].baseline) for b in wanted]
    return plan(found, rows=rows, baseline_model=gate.baseline_model, min_delta=gate.min_delta).warning
