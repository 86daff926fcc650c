"""Error bars from per-example scores (Miller 2024, "Adding Error Bars to Evals"), and power before a run.

- **A benchmark's score**: the mean of its examples' ``score`` in ``samples.jsonl``. Its 95 % CI is the t
  interval of the mean: ``sd / sqrt(n)`` with n - 1 degrees of freedom, or, when examples share a cluster, the
  cluster-robust (CR1) standard error with G - 1 degrees of freedom, statsmodels' for an intercept-only OLS fit.
  0/1 scores without clusters get Wilson's score interval instead (statsmodels ``proportion_confint``): the t
  interval of a proportion is degenerate at 0 % or 100 % and too narrow at the 20-40 examples the example DAGs
  run. Bundles are read in one pass with running sums (:class:`Moments`); the paired comparison, which holds
  its pairs anyway, fits statsmodels' OLS (:func:`fit_mean`).
- **Clusters**: an example's ``cluster`` field when the harness wrote one (the benchmark's declared per-example
  cluster key: a passage, a template), else its ``task`` when a benchmark is made of several (MMLU's subjects).
- **The normalised score** is linear in the score, ``100 (s - b) / (1 - b)``: its standard error is the
  score's times ``100 / (1 - b)``; a benchmark with subtasks averages them, so the subtasks' (independent)
  errors add in quadrature, divided by their count. The mean over benchmarks does the same over benchmarks
  (disjoint examples, independent). Hand-written because it is that one line of the delta method, and nothing
  in scipy/statsmodels takes a standard error through a fixed linear map. Normal 95 % intervals; the leaderboard's
  clip at 0 is applied to the bounds, and the slope is kept where the point estimate is clipped (conservative).
- **Minimum detectable difference** (80 % power, 5 % two-sided, paired design). 0/1 scores: the smallest delta
  at which the exact McNemar test that ``compare`` runs has 80 % power, for n pairs and a discordance rate psi
  (the share of examples the two models disagree on): discordant pairs D ~ Binomial(n, psi), the model's wins
  among them ~ Binomial(D, (psi + delta) / (2 psi)), the test rejects outside its exact binomial critical
  values; scipy's binomial distribution sums it over D and ``brentq`` solves for delta. Hand-written because
  neither scipy nor statsmodels has a power function for McNemar's test, and the normal approximations
  overstate the exact test's power (0.76 instead of 0.80 at n = 200, psi = 0.2). Continuous scores: statsmodels'
  ``TTestPower`` (paired t) effect size times the differences' standard deviation.

scipy, numpy and statsmodels are imported inside the functions that use them.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

LEVEL = 0.95
ALPHA, POWER = 0.05, 0.80
DEFAULT_DISCORDANCE = 0.2  # assumed share of examples two checkpoints disagree on, with no earlier results
TOLERANCE = 1e-6  # a row's score and the mean of its examples' scores agree within this


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error and 95 % CI (``None`` where it cannot be computed)."""

    mean: float
    se: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    clusters: int | None = None  # clusters the standard error was computed over; None: not clustered
    method: str = ""

    def as_dict(self, digits: int = 6) -> dict[str, Any]:
        return {k: round(v, digits) if isinstance(v, float) else v for k, v in asdict(self).items()}


KEPT = ("task", "doc_id", "cluster", "score")  # what statistics read of a record: not its input and output


def read_samples(bundle: str | Path) -> list[dict[str, Any]]:
    """The per-example records of a result bundle, each reduced to :data:`KEPT` (``[]`` without any); cached
    in the bundle's ``scores.json`` (keyed by the samples file's size and time), as paired comparisons and the
    leaderboard's tiers read the same bundles again and again."""
    from evaljobs.engine.results import write_cache

    path = Path(bundle) / "samples.jsonl"
    if not path.is_file():
        return []
    info = path.stat()
    key, cache = [info.st_size, info.st_mtime_ns], path.with_name("scores.json")
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            return cached["records"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    records = list(iter_samples(bundle))
    with suppress(OSError):  # a read-only results home: read again next time
        write_cache(cache, {"key": key, "records": records})
    return records


def iter_samples(bundle: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a bundle's ``samples.jsonl`` reduced to :data:`KEPT`, one at a time."""
    path = Path(bundle) / "samples.jsonl"
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                record = json.loads(line)
                yield {k: _interned(record[k]) for k in KEPT if k in record}


def _interned(value: Any) -> Any:
    return sys.intern(value) if isinstance(value, str) else value


def score_of(record: dict[str, Any]) -> float | None:
    """An example's score as a number (booleans are 0/1); ``None`` when it was not scored."""
    value = record.get("score")
    if value is None or isinstance(value, str):
        return None
    return float(value)


def cluster_keys(records: Sequence[dict[str, Any]]) -> list[Any] | None:
    """The cluster of each record (its ``cluster``, else its ``task`` when there are several), or ``None``."""
    if any("cluster" in r for r in records):  # an example without one is a cluster of its own
        return [
            json.dumps(r["cluster"], sort_keys=True, default=str)
            if "cluster" in r
            else f"\0{r.get('task')}/{r.get('doc_id')}"
            for r in records
        ]
    tasks = [r.get("task") for r in records]
    return tasks if len(set(tasks)) > 1 else None


def is_binary(values: Iterable[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def fit_mean(values: Sequence[float], clusters: Sequence[Any] | None = None, level: float = LEVEL) -> Estimate:
    """Mean, standard error and t interval of ``values`` from an intercept-only OLS fit: cluster-robust (CR1,
    G - 1 degrees of freedom) when ``clusters`` holds at least 2 clusters and fewer clusters than values."""
    import numpy as np
    import statsmodels.api as sm

    y = np.asarray(values, dtype=float)
    n = len(y)
    if n == 0:
        raise ValueError("no scored examples")
    mean = float(y.mean())
    groups = len(set(clusters)) if clusters is not None else 0
    if n < 2:
        return Estimate(mean, None, None, None, n, method="single example")
    if np.all(y == y[0]):
        return Estimate(mean, 0.0, mean, mean, n, groups if 1 < groups < n else None, "constant")
    model = sm.OLS(y, np.ones((n, 1)))
    if 1 < groups < n:
        codes = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)[1]
        fit = model.fit(cov_type="cluster", cov_kwds={"groups": codes}, use_t=True)
        method = "cluster-robust t"
    else:
        fit, groups, method = model.fit(use_t=True), None, "t"
    low, high = fit.conf_int(alpha=1 - level)[0]
    return Estimate(mean, float(fit.bse[0]), float(low), float(high), n, groups, method)


class Moments:
    """Running sums of scores, per cluster: what a mean's CI needs, so that a bundle is read in one pass, in
    memory that grows with its clusters, not its examples. Examples without a cluster are clusters of one.
    The cluster-robust variance is statsmodels' CR1 for an intercept-only fit, written out because statsmodels
    needs every example in memory at once (the tests check it against statsmodels' fit)."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2, self.binary = 0, 0.0, 0.0, True
        self.groups: dict[Any, list[float]] = {}  # cluster -> [count, sum]
        self.single = [0, 0.0, 0.0]  # examples without a cluster: count, sum, sum of squares

    def add(self, score: float, cluster: Any = None) -> None:
        self.n += 1
        step = score - self.mean  # Welford's update: no cancellation in the variance
        self.mean += step / self.n
        self.m2 += step * (score - self.mean)
        self.binary = self.binary and score in (0.0, 1.0)
        if cluster is None:
            self.single = [self.single[0] + 1, self.single[1] + score, self.single[2] + score * score]
        else:
            group = self.groups.setdefault(cluster, [0, 0.0])
            group[0], group[1] = group[0] + 1, group[1] + score

    def estimate(self, level: float = LEVEL) -> Estimate | None:
        """Wilson's interval for unclustered 0/1 scores, else a t interval (CR1 with G - 1 degrees of freedom
        when there are at least 2 clusters and fewer clusters than examples)."""
        from scipy.stats import t

        n, mean = self.n, self.mean
        if n == 0:
            return None
        if n == 1:
            return Estimate(mean, None, None, None, 1, method="single example")
        g = len(self.groups) + self.single[0] if self.groups else 0
        clustered = 1 < g < n
        if self.m2 <= 0.0:
            return Estimate(mean, 0.0, mean, mean, n, g if clustered else None, "constant")
        if clustered:
            k, total, squares = self.single
            meat = sum((s - c * mean) ** 2 for c, s in self.groups.values()) + squares - 2 * mean * total + k * mean**2
            se, df, method = math.sqrt(g / (g - 1) * meat) / n, g - 1, "cluster-robust t"
        else:
            se, df, method, g = math.sqrt(self.m2 / (n - 1) / n), n - 1, "t", None
        if not clustered and self.binary:
            from statsmodels.stats.proportion import proportion_confint

            low, high = proportion_confint(round(mean * n), n, alpha=1 - level, method="wilson")
            return Estimate(mean, se, float(low), float(high), n, None, "wilson")
        half = float(t.ppf(0.5 + level / 2, df)) * se
        return Estimate(mean, se, mean - half, mean + half, n, g, method)


def summarise(records: Iterable[dict[str, Any]]) -> tuple[Moments, dict[Any, Moments]]:
    """One pass over ``records``: the benchmark's moments, clustered as :func:`cluster_keys` says (a declared
    ``cluster`` field, else the task when there are several), and each task's (by declared clusters)."""
    declared, by_task, tasks = Moments(), {}, Moments()
    for record in records:
        if (score := score_of(record)) is None:
            continue
        cluster = json.dumps(record["cluster"], sort_keys=True, default=str) if "cluster" in record else None
        declared.add(score, cluster)
        tasks.add(score, record.get("task"))
        by_task.setdefault(record.get("task"), Moments()).add(score, cluster)
    overall = declared if declared.groups or len(tasks.groups) < 2 else tasks
    return overall, by_task


def mean_ci(values: Sequence[float], clusters: Sequence[Any] | None = None, level: float = LEVEL) -> Estimate | None:
    """The CI of the mean of ``values`` (see :meth:`Moments.estimate`)."""
    moments = Moments()
    for i, value in enumerate(values):
        moments.add(float(value), None if clusters is None else clusters[i])
    return moments.estimate(level)


def score_ci(records: Iterable[dict[str, Any]], reported: float | None = None) -> Estimate | None:
    """The CI of a benchmark's score from its records; ``None`` when none is scored, or when the mean of the
    examples' scores is not the ``reported`` score (a corpus-level metric: BLEU, F1 over the corpus, ...)."""
    overall, _ = summarise(records)
    return _checked(overall, reported)


def _checked(moments: Moments, reported: float | None) -> Estimate | None:
    if moments.n == 0 or (reported is not None and abs(moments.mean - reported) > TOLERANCE):
        return None
    return moments.estimate()


def slope(baseline: float) -> float:
    """Normalised points per unit of score."""
    return 0.0 if baseline >= 1.0 else 100.0 / (1.0 - baseline)


def normal_interval(point: float, se: float | None, level: float = LEVEL, clip: bool = True) -> Estimate:
    """``point`` +- z se, clipped to [0, 100] when ``clip`` (normalised scores)."""
    from scipy.stats import norm

    if se is None:
        return Estimate(point, None, None, None, 0, method="normal")
    z = float(norm.ppf(0.5 + level / 2))
    low, high = point - z * se, point + z * se
    if clip:
        low, high = max(0.0, min(100.0, low)), max(0.0, min(100.0, high))
    return Estimate(point, se, low, high, 0, method="normal")


def normalised_ci(
    records: Iterable[dict[str, Any]], score: float, baseline: float, subscores: dict[str, float], normalised: float
) -> tuple[Estimate | None, Estimate | None]:
    """(score CI, CI of the result's ``normalised`` score, the leaderboard's), from one pass over its records:
    propagated per subtask when it has ``subscores`` (each with its declared clusters), else from the score's."""
    overall, by_task = summarise(records)
    estimate = _checked(overall, score)
    if estimate is None:
        return None, None
    if not subscores:
        if estimate.se is None:
            return estimate, None
        return estimate, _with_n(normal_interval(normalised, estimate.se * slope(baseline)), estimate.n)
    parts = [_checked(by_task.get(task, Moments()), subscore) for task, subscore in subscores.items()]
    if any(p is None or p.se is None for p in parts):
        return estimate, None
    se = math.sqrt(sum(p.se**2 for p in parts)) / len(parts) * slope(baseline)
    return estimate, _with_n(normal_interval(normalised, se), sum(p.n for p in parts))


def average_ci(estimates: Sequence[Estimate | None], level: float = LEVEL) -> Estimate | None:
    """The CI of the mean of independent normalised scores (disjoint examples); ``None`` if any lacks one."""
    if not estimates or any(e is None or e.se is None for e in estimates):
        return None
    mean = sum(e.mean for e in estimates) / len(estimates)
    se = math.sqrt(sum(e.se**2 for e in estimates)) / len(estimates)
    return _with_n(normal_interval(mean, se, level), sum(e.n for e in estimates))


def _with_n(estimate: Estimate, n: int) -> Estimate:
    return Estimate(**(asdict(estimate) | {"n": n}))


def standardised_effect(n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The standardised mean difference a two-sided paired t test with ``n`` pairs detects (statsmodels)."""
    from statsmodels.stats.power import TTestPower

    if n < 2:
        return math.inf
    return float(TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power))


@lru_cache(maxsize=4096)
def mde(n: int, discordance: float | None = None, alpha: float = ALPHA, power: float = POWER) -> float | None:
    """Minimum detectable difference in score (0-1) between two models on ``n`` paired 0/1 examples that
    disagree on a share ``discordance`` of them (default :data:`DEFAULT_DISCORDANCE`), for the exact McNemar
    test; ``None`` when even a model winning every discordant pair would not be detected at that power.
    Cached: a report compares many pairs of the same size and discordance."""
    from scipy.optimize import brentq

    psi = DEFAULT_DISCORDANCE if discordance is None else discordance
    if not 0.0 < psi <= 1.0:
        raise ValueError(f"discordance must be in (0, 1], got {psi}")
    if n < 1 or mcnemar_power(n, psi, psi, alpha) < power:
        return None
    return float(brentq(lambda delta: mcnemar_power(n, psi, delta, alpha) - power, 0.0, psi, xtol=1e-7))


def mcnemar_power(n: int, discordance: float, delta: float, alpha: float = ALPHA) -> float:
    """Power of the two-sided exact McNemar test (statsmodels' p = min(1, 2 P[X <= min(b, c)])) on ``n`` pairs,
    a share ``discordance`` of them discordant, when the model's score exceeds the baseline's by ``delta``."""
    import numpy as np
    from scipy.stats import binom

    d = np.arange(1, n + 1)
    critical = binom.ppf(alpha / 2, d, 0.5)  # the largest k with 2 P[X <= k] <= alpha, once corrected below
    critical = np.where(2 * binom.cdf(critical, d, 0.5) > alpha, critical - 1, critical)
    wins = min(1.0, (discordance + delta) / (2 * discordance))
    rejected = binom.cdf(critical, d, wins) + binom.sf(d - critical - 1, d, wins)
    return float(np.sum(binom.pmf(d, n, discordance) * np.where(critical >= 0, rejected, 0.0)))


def mde_average(parts: Sequence[tuple[int, float, float]], alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable difference of the normalised average (z-based, paired) over benchmarks given as
    (pairs n, random baseline, variance of one pair's difference: the discordance rate for 0/1 scores)."""
    from scipy.stats import norm

    se = math.sqrt(sum(variance / n * slope(baseline) ** 2 for n, baseline, variance in parts)) / len(parts)
    return float(norm.ppf(1 - alpha / 2) + norm.ppf(power)) * se


def mde_continuous(n: int, sd: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """Minimum detectable mean difference on ``n`` pairs whose differences have standard deviation ``sd``."""
    return standardised_effect(n, alpha, power) * sd


def intervals(row: Any, normalised: float, compute: bool = True) -> tuple[Estimate | None, Estimate | None]:
    """(score CI, normalised-score CI) of a result row from its local bundle's ``samples.jsonl``, cached in the
    bundle's ``ci.json`` (keyed by the samples file's size and time); ``(None, None)`` without a local bundle,
    or without a cached one when not ``compute``."""
    from evaljobs.engine.results import write_cache

    path = Path(row.bundle) / "samples.jsonl" if row.bundle else None
    if path is None or not path.is_file():
        return None, None
    info = path.stat()
    key = [info.st_size, info.st_mtime_ns, row.score, row.baseline, normalised]
    cache = path.with_name("ci.json")
    try:
        cached = json.loads(cache.read_text(encoding="utf-8"))
        if cached.get("key") == key:
            return tuple(Estimate(**e) if e else None for e in (cached["score"], cached["normalised"]))
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not compute:
        return None, None
    score, norm = normalised_ci(iter_samples(path.parent), row.score, row.baseline, row.subscores, normalised)
    with suppress(OSError):  # a read-only results home: computed again next time
        write_cache(cache, {"key": key, "score": score and asdict(score), "normalised": norm and asdict(norm)})
    return score, norm
