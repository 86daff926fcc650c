"""Paired comparison of two models of a project, example by example.

Examples are paired by (benchmark, task, doc_id): ``task`` is the subtask (a group benchmark such as MMLU numbers
its examples per subtask), otherwise the benchmark itself. Only results recorded with the same score-relevant
settings are compared; a benchmark whose results differ in them refuses the comparison, naming what differs.

Per benchmark, on the per-example differences d = A - B (scores 0-1):
- delta = mean(d); its 95 % CI is :func:`stats.fit_mean`'s t interval of d (cluster-robust where examples share a
  cluster);
- the p-value: McNemar's exact test (statsmodels) on the discordant pairs for 0/1 scores, scipy's paired t test
  for continuous scores (a cluster-robust t test when clustered);
- Holm's adjustment across the benchmarks compared (statsmodels ``multipletests``);
- flips_up: examples the baseline got wrong and the model right (a score that rose), flips_down the reverse.
Overall: the delta of the normalised average (the leaderboard's), with a normal CI from the per-benchmark
standard errors propagated as in :mod:`stats`, and one- and two-sided p-values of that z statistic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from evaljobs.engine import stats
from evaljobs.engine.errors import EvalJobsError
from evaljobs.engine.leaderboard import normalise
from evaljobs.engine.results import ResultRow


class ComparisonError(EvalJobsError):
    """Two models' results cannot be compared; the message names why and what to re-run."""


@dataclass(frozen=True)
class BenchmarkComparison:
    benchmark: str
    n: int
    delta: float
    ci_low: float | None
    ci_high: float | None
    p_value: float
    method: str
    flips_up: int
    flips_down: int
    discordance: float  # share of pairs whose scores differ
    mde: float | None  # minimum detectable delta at this n and discordance (or sd), 80 % power; None: none
    normalised_delta: float
    normalised_se: float | None
    baseline: float = 0.0  # the benchmark's random baseline (its normalisation)
    sd: float = 0.0  # standard deviation of the per-example differences
    p_adjusted: float | None = None
    clusters: int | None = None
    flipped_up: list[list[Any]] = field(default_factory=list)  # [task, doc_id] of each flip
    flipped_down: list[list[Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Comparison:
    project: str
    model: str
    baseline: str
    benchmarks: list[BenchmarkComparison]
    overall: dict[str, Any]
    mde: dict[str, Any]
    not_compared: dict[str, str]  # benchmark -> why

    def as_dict(self, digits: int = 6) -> dict[str, Any]:
        def rounded(value: Any) -> Any:
            if isinstance(value, float):
                return round(value, digits)
            if isinstance(value, dict):
                return {k: rounded(v) for k, v in value.items()}
            return value

        rows = [rounded(asdict(b)) for b in self.benchmarks]
        head = {"project": self.project, "model": self.model, "baseline": self.baseline}
        return (
            head
            | {"benchmarks": rows, "overall": rounded(self.overall), "mde": rounded(self.mde)}
            | {"not_compared": self.not_compared}
        )

    def to_text(self) -> str:
        """A table: deltas in points of score (x100), 95 % CIs, p-values raw and Holm-adjusted, flips, MDE."""

        def pts(value: float | None) -> str:
            return "-" if value is None else f"{100 * value:+.1f}"

        header = ["benchmark", "n", "delta", "95% CI", "p", "p (Holm)", "test", "up", "down", "MDE"]
        body = [
            [
                r.benchmark,
                str(r.n),
                pts(r.delta),
                f"[{pts(r.ci_low)}, {pts(r.ci_high)}]",
                f"{r.p_value:.3g}",
                f"{r.p_adjusted:.3g}",
                r.method,
                str(r.flips_up),
                str(r.flips_down),
                "-" if r.mde is None else f"{100 * r.mde:.1f}",
            ]
            for r in self.benchmarks
        ]
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            for row in [header, *body]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        o = self.overall
        ci = "-" if o["se"] is None else f"[{o['ci_low']:+.2f}, {o['ci_high']:+.2f}], p = {o['p_value']:.3g}"
        lines += [
            "",
            f"normalised average: {self.model} - {self.baseline} = {o['delta']:+.2f} points, 95% CI {ci}",
            f"minimum detectable difference (80% power, 5% two-sided): {self.mde['normalised_average']:.2f} points"
            " of normalised average; per benchmark: the MDE column (points of score)",
        ]
        lines += [f"not compared: {b}: {why}" for b, why in self.not_compared.items()]
        title = f"{self.model} vs {self.baseline} in project {self.project!r} (delta and CI in points of score)"
        return title + "\n" + "\n".join(lines)


def select(rows: Iterable[ResultRow], model: str, baseline: str, benchmarks: Sequence[str] = ()) -> dict[str, tuple]:
    """The (model row, baseline row) to compare per benchmark: the newest pair with equal settings.
    Raises :class:`ComparisonError` naming the benchmarks whose results differ in score-relevant settings."""
    by: dict[str, dict[str, dict[str, ResultRow]]] = {model: {}, baseline: {}}
    for row in rows:  # oldest first: a newer row of the same settings replaces an older one
        if row.model in by:
            by[row.model].setdefault(row.benchmark, {})[row.settings_hash] = row
    for name in (model, baseline):
        if not by[name]:
            raise ComparisonError(f"no results for {name!r} in this project; `evaljobs leaderboard` lists its models")
    wanted = list(benchmarks) or sorted(set(by[model]) & set(by[baseline]))
    chosen, mismatched = {}, []
    for benchmark in wanted:
        a, b = by[model].get(benchmark, {}), by[baseline].get(benchmark, {})
        if not a or not b:
            raise ComparisonError(f"{model if not a else baseline!r} has no result on {benchmark!r}")
        shared = set(a) & set(b)
        if shared:
            key = max(shared, key=lambda h: max(a[h].recorded_at, b[h].recorded_at))
            chosen[benchmark] = (a[key], b[key])
        else:
            newest_a, newest_b = (max(x.values(), key=lambda r: r.recorded_at) for x in (a, b))
            mismatched.append(f"{benchmark}: {differences(newest_a.settings, newest_b.settings, model, baseline)}")
    if mismatched:
        raise ComparisonError(
            "results with different score-relevant settings cannot be paired; re-run one model with the other's "
            "settings:\n" + "\n".join(f"  - {m}" for m in mismatched)
        )
    if not chosen:
        raise ComparisonError(f"{model!r} and {baseline!r} have no benchmark in common")
    return chosen


def differences(a: dict[str, Any], b: dict[str, Any], name_a: str, name_b: str) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    shown = ", ".join(f"{k} {a.get(k)!r} ({name_a}) vs {b.get(k)!r} ({name_b})" for k in keys)
    return shown or "settings hashes differ (results recorded by another version)"


def compare(
    rows: Iterable[ResultRow],
    model: str,
    baseline: str,
    benchmarks: Sequence[str] = (),
    project: str = "",
    discordance: float | None = None,
) -> Comparison:
    """Compare ``model`` with ``baseline`` on their common benchmarks (or ``benchmarks``) from their bundles."""
    from statsmodels.stats.multitest import multipletests

    results, skipped = [], {}
    for benchmark, (row_a, row_b) in select(rows, model, baseline, benchmarks).items():
        try:
            results.append(paired(benchmark, row_a, row_b, discordance))
        except ComparisonError as exc:
            skipped[benchmark] = str(exc)
    if not results:
        raise ComparisonError(
            "no benchmark could be compared:\n" + "\n".join(f"  - {b}: {w}" for b, w in skipped.items())
        )
    adjusted = multipletests([r.p_value for r in results], method="holm")[1]
    results = [
        BenchmarkComparison(**(asdict(r) | {"p_adjusted": float(p)})) for r, p in zip(results, adjusted, strict=True)
    ]
    overall = overall_delta(results)
    return Comparison(project, model, baseline, results, overall, planned(results, discordance), skipped)


def scored(row: ResultRow) -> dict[tuple, tuple[dict, float]]:
    """(record, score) of each scored example of ``row``'s bundle, keyed by (task, doc_id)."""
    found = {}
    for record in stats.read_samples(row.bundle):
        if (score := stats.score_of(record)) is not None:
            found[(record.get("task"), record.get("doc_id"))] = (record, score)
    return found


def pairs(row_a: ResultRow, row_b: ResultRow, a: dict | None = None, b: dict | None = None) -> list[tuple]:
    """(model record, model score, baseline score) of each example both scored, in the model's order (``a``,
    ``b``: the rows' :func:`scored` examples, when already read)."""
    a, b = a if a is not None else scored(row_a), b if b is not None else scored(row_b)
    return [(record, score, b[key][1]) for key, (record, score) in a.items() if key in b]


def paired(benchmark: str, row_a: ResultRow, row_b: ResultRow, discordance: float | None = None) -> BenchmarkComparison:
    """One benchmark's paired comparison (p_adjusted left unset); its MDE from ``discordance`` when given, else
    from the observed one (the default when no pair differs)."""
    import numpy as np
    from scipy import stats as sps

    matched = pairs(row_a, row_b)
    if len(matched) < 2:
        raise ComparisonError(f"{len(matched)} examples scored by both (bundles {row_a.bundle}, {row_b.bundle})")
    records = [m[0] for m in matched]
    a, b = np.array([m[1] for m in matched]), np.array([m[2] for m in matched])
    d = a - b
    fit = stats.fit_mean(d, stats.cluster_keys(records))
    up, down = [i for i in range(len(d)) if d[i] > 0], [i for i in range(len(d)) if d[i] < 0]
    observed = (len(up) + len(down)) / len(d)
    if stats.is_binary(a) and stats.is_binary(b):
        from statsmodels.stats.contingency_tables import mcnemar

        both, neither = int(np.sum((a == 1) & (b == 1))), int(np.sum((a == 0) & (b == 0)))
        p, method = float(mcnemar([[both, len(up)], [len(down), neither]], exact=True).pvalue), "mcnemar_exact"
        mde = stats.mde(len(d), discordance if discordance is not None else observed or None)
    elif fit.clusters is not None:
        p, method = _clustered_p(d, records), "paired_t_clustered"
        mde = stats.mde_continuous(len(d), float(np.std(d, ddof=1)))
    else:
        p, method = (float(sps.ttest_rel(a, b).pvalue) if fit.se else 1.0), "paired_t"
        mde = stats.mde_continuous(len(d), float(np.std(d, ddof=1)))
    delta_norm, se_norm = _normalised(records, a, b, row_a)
    ids = [[r.get("task"), r.get("doc_id")] for r in records]
    return BenchmarkComparison(
        benchmark,
        len(d),
        fit.mean,
        fit.ci_low,
        fit.ci_high,
        p,
        method,
        len(up),
        len(down),
        observed,
        mde,
        delta_norm,
        se_norm,
        row_a.baseline,
        float(np.std(d, ddof=1)),
        clusters=fit.clusters,
        flipped_up=[ids[i] for i in up],
        flipped_down=[ids[i] for i in down],
    )


def _clustered_p(d: Any, records: list[dict]) -> float:
    import numpy as np
    import statsmodels.api as sm

    codes = np.unique(np.asarray([str(c) for c in stats.cluster_keys(records)]), return_inverse=True)[1]
    fit = sm.OLS(d, np.ones((len(d), 1))).fit(cov_type="cluster", cov_kwds={"groups": codes}, use_t=True)
    return float(fit.pvalues[0])


def _normalised(records: list[dict], a: Any, b: Any, row: ResultRow) -> tuple[float, float | None]:
    """The delta of the normalised score (macro over subtasks, as the leaderboard) on the paired examples, and
    its standard error: each subtask's paired SE times the normalisation's slope, in quadrature over subtasks."""
    return _normalised_delta(a, b, _groups(records, row), row.baseline)


def _groups(records: list[dict], row: ResultRow) -> list[tuple[Any, list[Any] | None]]:
    """(indices, cluster keys or None) of each subtask of ``records`` (one group without subtasks)."""
    import numpy as np

    groups: dict[Any, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(record.get("task") if row.subscores else None, []).append(i)
    return [
        (np.array(indices), None if row.subscores else stats.cluster_keys([records[i] for i in indices]))
        for indices in groups.values()
    ]


def _normalised_delta(a: Any, b: Any, groups: list[tuple], baseline: float) -> tuple[float, float | None]:
    deltas, variances = [], []
    for indices, clusters in groups:
        ga, gb = a[indices], b[indices]
        deltas.append(normalise(float(ga.mean()), baseline) - normalise(float(gb.mean()), baseline))
        if len(indices) < 2:
            variances.append(None)
            continue
        d = ga - gb
        se = stats.mean_ci(d, clusters).se if clusters is not None else float(d.std(ddof=1)) / math.sqrt(len(d))
        variances.append((se * stats.slope(baseline)) ** 2)
    delta = sum(deltas) / len(deltas)
    return delta, None if None in variances else math.sqrt(sum(variances)) / len(variances)


def z_test(delta: float, se: float, null: float = 0.0) -> tuple[float, float]:
    """(two-sided, one-sided "greater") p-values of the z statistic (delta - null) / se."""
    from scipy.stats import norm

    z = (delta - null) / se if se else (math.inf if delta > null else -math.inf if delta < null else 0.0)
    return (1.0, 0.5) if z == 0 else (float(2 * norm.sf(abs(z))), float(norm.sf(z)))


def overall_delta(results: Sequence[BenchmarkComparison]) -> dict[str, Any]:
    """The delta of the normalised average over ``results``' benchmarks, its SE, 95 % CI and z-test p-values."""
    delta = sum(r.normalised_delta for r in results) / len(results)
    if any(r.normalised_se is None for r in results):
        return {"delta": delta, "se": None, "ci_low": None, "ci_high": None, "p_value": None, "p_one_sided": None}
    se = math.sqrt(sum(r.normalised_se**2 for r in results)) / len(results)
    interval = stats.normal_interval(delta, se, clip=False)
    two, one = z_test(delta, se)
    return {
        "delta": delta,
        "se": se,
        "ci_low": interval.ci_low,
        "ci_high": interval.ci_high,
        "p_value": two,
        "p_one_sided": one,
        "benchmarks": len(results),
        "units": "normalised points (0-100)",
    }


def planned(results: Sequence[BenchmarkComparison], discordance: float | None = None) -> dict[str, Any]:
    """The minimum detectable difference of the normalised average (80 % power, 5 % two-sided) at these
    benchmarks' n: z-based, each benchmark's difference variance being its discordance rate for 0/1 scores
    (``discordance`` when given, else the observed one, else the default) or its observed variance otherwise,
    scaled by its normalisation (a benchmark's subtasks are pooled: an approximation)."""
    parts = []
    for r in results:
        if r.method == "mcnemar_exact":
            variance = discordance if discordance is not None else r.discordance or stats.DEFAULT_DISCORDANCE
        else:
            variance = r.sd**2
        parts.append((r.n, r.baseline, variance))
    source = "stated" if discordance is not None else "observed (default where none)"
    return {
        "normalised_average": stats.mde_average(parts),
        "alpha": stats.ALPHA,
        "power": stats.POWER,
        "discordance": source,
    }


def tiers(entries: Sequence[Any], alpha: float = stats.ALPHA) -> list[int | None]:
    """The tier of each of a leaderboard's ranked entries (best first).

    Walking down the ranking, an entry joins the tier of the entry leading the tier above it, unless it is
    significantly worse than that leader: a two-sided z test of the difference of their normalised averages
    over the benchmarks both have, at ``alpha`` / (entries - 1) (Bonferroni over the most comparisons the walk
    makes). Paired, example by example (as ``compare``), when both have the same settings and local bundles;
    else from each score's CI as independent samples. An entry with no benchmark in common with the leader
    starts a tier; one whose difference has no standard error (no CIs) gets ``None`` and leaves the walk as
    it is (all are ``None`` when none could be compared)."""
    level = alpha / max(1, len(entries) - 1)
    read: dict[str, tuple] = {}
    found: list[int | None] = []
    leader, tier = None, 0
    for entry in entries:
        p = None if leader is None else separation(leader, entry, read)
        if leader is None or (p is not None and p <= level):
            leader, tier = entry, tier + 1
        found.append(tier if leader is entry or p is not None else None)
    return found if len(found) < 2 or any(t is not None for t in found[1:]) else [None] * len(found)


def separation(leader: Any, entry: Any, read: dict[str, tuple] | None = None) -> float | None:
    """The two-sided p-value of "``leader`` and ``entry`` have the same normalised average" (see :func:`tiers`);
    ``read`` keeps the bundles already read."""
    read = {} if read is None else read
    common = [b for b in leader.normalised if b in entry.normalised]
    if not common:
        return 0.0
    deltas, ses = [], []
    local = leader.settings_hash == entry.settings_hash and all(
        _local(e.rows.get(b)) for e in (leader, entry) for b in common
    )
    for b in common:
        if local and (paired := _paired_normalised(leader.rows[b], entry.rows[b], read)):
            deltas.append(paired[0])
            ses.append(paired[1])
            continue
        ci_a, ci_b = leader.normalised_ci.get(b), entry.normalised_ci.get(b)
        deltas.append(leader.normalised[b] - entry.normalised[b])
        ses.append(None if ci_a is None or ci_b is None or None in (ci_a.se, ci_b.se) else math.hypot(ci_a.se, ci_b.se))
    if None in ses:
        return None
    return z_test(sum(deltas) / len(deltas), math.sqrt(sum(se**2 for se in ses)) / len(ses))[0]


def _paired_normalised(row_a: ResultRow, row_b: ResultRow, read: dict) -> tuple[float, float | None] | None:
    """:func:`_normalised` of two rows' paired examples (``None`` under 2 pairs); ``read`` keeps each bundle's
    examples as arrays, so that bundles with the same examples in the same order pair without a lookup."""
    import numpy as np

    for row in (row_a, row_b):
        if row.bundle not in read:
            found = scored(row)
            records = [record for record, _ in found.values()]
            scores = np.array([score for _, score in found.values()])
            read[row.bundle] = (found, tuple(found), scores, _groups(records, row))
    (found_a, keys_a, a, groups), (found_b, keys_b, b, _) = read[row_a.bundle], read[row_b.bundle]
    if keys_a != keys_b:
        matched = pairs(row_a, row_b, found_a, found_b)
        if len(matched) < 2:
            return None
        records = [m[0] for m in matched]
        a, b, groups = np.array([m[1] for m in matched]), np.array([m[2] for m in matched]), _groups(records, row_a)
    elif len(keys_a) < 2:
        return None
    return _normalised_delta(a, b, groups, row_a.baseline)


def _local(row: ResultRow | None) -> bool:
    from pathlib import Path

    return row is not None and bool(row.bundle) and (Path(row.bundle) / "samples.jsonl").is_file()
