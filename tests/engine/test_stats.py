"""Confidence intervals and power (engine/stats.py), each checked against a separate computation: scipy's tests
and intervals, or the textbook formula written out here, on real MMLU rows answered by two simple heuristics."""

import csv
import functools
import math

import numpy as np
import pytest
from scipy import stats as sps

from evaljobs.engine import leaderboard, stats

SUBJECTS = ("abstract_algebra", "college_biology", "high_school_geography", "marketing")


def heuristic_records(data_root, pick, subjects=SUBJECTS):
    """samples.jsonl records of a 'model' answering real MMLU test rows with ``pick(question, choices)``."""
    records = []
    for subject in subjects:
        with (data_root / "mmlu" / "test" / f"{subject}_test.csv").open(encoding="utf-8") as f:
            for doc_id, row in enumerate(csv.DictReader(f)):
                choices = [row[f"choice{i}"] for i in range(4)]
                answer = pick(row["question"], choices)
                records.append(
                    {
                        "task": f"mmlu_{subject}",
                        "doc_id": doc_id,
                        "input": row["question"],
                        "target": row["answer"],
                        "output": answer,
                        "score": float(answer == int(row["answer"])),
                    }
                )
    return records


def longest(question, choices):
    return max(range(4), key=lambda i: len(choices[i]))


def overlap(question, choices):
    words = set(question.lower().split())
    return max(range(4), key=lambda i: (len(words & set(choices[i].lower().split())), -i))


def cr1(values, clusters):
    """The CR1 cluster-robust standard error of a mean, and its t interval with G - 1 degrees of freedom."""
    y = np.asarray(values, float)
    n, labels = len(y), sorted(set(clusters))
    residual = y - y.mean()
    meat = sum(residual[[c == g for c in clusters]].sum() ** 2 for g in labels)
    g = len(labels)
    se = math.sqrt(meat / n**2 * g / (g - 1) * (n - 1) / (n - 1))  # K = 1 regressor: (N-1)/(N-K) = 1
    half = sps.t.ppf(0.975, g - 1) * se
    return se, y.mean() - half, y.mean() + half


def test_binary_unclustered_ci_is_wilsons(data_root):
    records = heuristic_records(data_root, longest, subjects=("marketing",))
    values = [r["score"] for r in records]
    estimate = stats.score_ci(records, sum(values) / len(values))
    k, n = int(sum(values)), len(values)
    wilson = sps.binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert (estimate.n, estimate.method, estimate.clusters) == (234, "wilson", None)
    assert estimate.mean == pytest.approx(k / n)
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((wilson.low, wilson.high))
    assert estimate.se == pytest.approx(sps.sem(values))


def test_subtasks_are_clusters_and_get_a_cluster_robust_t_interval(data_root):
    records = heuristic_records(data_root, longest)
    values, tasks = [r["score"] for r in records], [r["task"] for r in records]
    estimate = stats.score_ci(records)
    se, low, high = cr1(values, tasks)
    assert (estimate.n, estimate.clusters, estimate.method) == (676, 4, "cluster-robust t")
    assert estimate.se == pytest.approx(se)
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((low, high))
    assert estimate.ci_high - estimate.ci_low > 2 * 1.96 * sps.sem(values)  # wider than the iid interval here


def test_a_declared_cluster_field_wins_over_the_task(data_root):
    records = heuristic_records(data_root, overlap, subjects=("college_biology",))
    for r in records:
        r["cluster"] = r["doc_id"] // 8  # e.g. 8 questions per passage
    estimate = stats.score_ci(records)
    se, low, high = cr1([r["score"] for r in records], [r["cluster"] for r in records])
    assert estimate.clusters == math.ceil(144 / 8)
    assert (estimate.se, estimate.ci_low, estimate.ci_high) == pytest.approx((se, low, high))


def test_continuous_scores_get_the_t_interval():
    values = list(np.random.default_rng(3).beta(2, 5, size=40))
    records = [{"task": "t", "doc_id": i, "score": v} for i, v in enumerate(values)]
    estimate = stats.score_ci(records)
    expected = sps.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert estimate.method == "t"
    assert (estimate.ci_low, estimate.ci_high) == pytest.approx((expected.low, expected.high))


def test_no_ci_when_the_metric_is_not_the_mean_of_the_examples_or_nothing_is_scored():
    records = [{"task": "t", "doc_id": i, "score": i % 2} for i in range(10)]
    assert stats.score_ci(records, reported=0.5) is not None
    assert stats.score_ci(records, reported=0.42) is None  # a corpus-level metric (BLEU, ...)
    assert stats.score_ci([{"task": "t", "doc_id": 0, "score": None}]) is None


def test_normalised_ci_propagates_through_subtasks_and_the_average(data_root):
    records = heuristic_records(data_root, longest)
    by_task = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r["score"])
    subscores = {t: float(np.mean(v)) for t, v in by_task.items()}
    normalised = sum(leaderboard.normalise(s, 0.25) for s in subscores.values()) / 4
    _, estimate = stats.normalised_ci(
        records, float(np.mean([r["score"] for r in records])), 0.25, subscores, normalised
    )
    se = math.sqrt(sum(sps.sem(v) ** 2 for v in by_task.values())) / 4 * 100 / 0.75
    z = sps.norm.ppf(0.975)
    assert estimate.mean == pytest.approx(normalised)
    assert estimate.se == pytest.approx(se)
    assert estimate.ci_high == pytest.approx(normalised + z * se)
    assert estimate.ci_low == pytest.approx(max(0.0, normalised - z * se))
    assert estimate.n == len(records)

    gsm = [{"task": "g", "doc_id": i, "score": float(i % 3 == 0)} for i in range(60)]
    _, other = stats.normalised_ci(gsm, 20 / 60, 0.0, {}, 100 * 20 / 60)
    assert other.se == pytest.approx(100 * sps.sem([r["score"] for r in gsm]))
    average = stats.average_ci([estimate, other])
    se_avg = math.sqrt(estimate.se**2 + other.se**2) / 2
    assert average.mean == pytest.approx((normalised + 100 / 3) / 2)
    assert (average.ci_low, average.ci_high) == pytest.approx((average.mean - z * se_avg, average.mean + z * se_avg))
    assert stats.average_ci([estimate, None]) is None


@functools.cache
def rejection_region(d):
    """The model's win counts among d discordant pairs at which scipy's exact binomial test rejects at 5 %."""
    return [k for k in range(d + 1) if sps.binomtest(k, d).pvalue < 0.05]


def mcnemar_power(n, psi, delta):
    """Exact power of the two-sided exact McNemar test at 5 %: discordant pairs D ~ Binom(n, psi); given D,
    pairs where the model wins ~ Binom(D, (psi + delta) / (2 psi))."""
    power = 0.0
    for d in range(1, n + 1):
        rejects = rejection_region(d)
        if rejects:
            power += sps.binom.pmf(d, n, psi) * sps.binom.pmf(rejects, d, (psi + delta) / (2 * psi)).sum()
    return power


@pytest.mark.parametrize(("n", "psi"), [(200, 0.2), (100, 0.3)])
def test_mde_has_80_percent_power_under_the_exact_mcnemar_test(n, psi):
    detectable = stats.mde(n, psi)
    assert mcnemar_power(n, psi, detectable) == pytest.approx(0.8, abs=1e-4)
    assert mcnemar_power(n, psi, detectable / 2) < 0.4  # half of it is not detectable


def test_mde_defaults_and_continuous_scores():
    assert stats.mde(40) == stats.mde(40, stats.DEFAULT_DISCORDANCE)
    assert stats.mde(40) > stats.mde(400)  # more examples, smaller detectable differences
    assert stats.mde(20, 0.2) is None  # 20 examples: ~4 discordant pairs can never reach p < 0.05 often enough
    with pytest.raises(ValueError, match="discordance"):
        stats.mde(40, 0.0)
    # a paired t test with 50 pairs of differences with sd 0.3: the effect for 80 % power, by scipy's noncentral t
    detectable = stats.mde_continuous(50, 0.3)
    nc = detectable / 0.3 * math.sqrt(50)
    crit = sps.t.ppf(0.975, 49)
    assert sps.nct.sf(crit, 49, nc) + sps.nct.cdf(-crit, 49, nc) == pytest.approx(0.8, abs=1e-4)


@pytest.mark.parametrize("clustered", [True, False])
def test_running_sums_give_statsmodels_fit(data_root, clustered):
    """The one-pass estimate (stats.Moments) against statsmodels' OLS fit on all values at once."""
    values = list(np.random.default_rng(5).normal(0.4, 0.2, size=300))
    clusters = [i // 7 if i % 5 else None for i in range(300)] if clustered else None  # some without a cluster
    streamed = stats.mean_ci(values, clusters)
    keys = None if clusters is None else [c if c is not None else f"own{i}" for i, c in enumerate(clusters)]
    fitted = stats.fit_mean(values, keys)
    assert streamed.method == fitted.method == ("cluster-robust t" if clustered else "t")
    assert streamed.clusters == fitted.clusters
    assert (streamed.mean, streamed.se, streamed.ci_low, streamed.ci_high) == pytest.approx(
        (fitted.mean, fitted.se, fitted.ci_low, fitted.ci_high), rel=1e-9
    )
