import math

import numpy as np
import pytest
from scipy import stats as sps

from evaljobs.engine.gate import Gate, evaluate
from tests.engine.test_compare import store_result
from tests.factories import record


def test_waits_for_the_model_and_every_benchmark(tmp_path):
    assert evaluate(Gate("p", "new"), tmp_path).reason == "no results yet for new in project p"
    record(tmp_path, "new", "gsm8k", 0.4)
    verdict = evaluate(Gate("p", "new", ("gsm8k", "arc")), tmp_path)
    assert not verdict.released and verdict.reason == "new has no results yet on arc"
    record(tmp_path, "new", "arc", 0.5, baseline=0.25)
    verdict = evaluate(Gate("p", "new", ("gsm8k", "arc")), tmp_path)
    assert verdict.released and verdict.average == pytest.approx((40.0 + 100 / 3) / 2) and verdict.rank == 1


def test_conditions(tmp_path):
    record(tmp_path, "old", "gsm8k", 0.30)
    record(tmp_path, "new", "gsm8k", 0.35)
    record(tmp_path, "best", "gsm8k", 0.90)
    assert evaluate(Gate("p", "new", min_average=35.0), tmp_path).released
    assert evaluate(Gate("p", "new", min_average=36.0), tmp_path).reason == "average 35.00 is below 36.0"
    assert evaluate(Gate("p", "new", max_rank=2), tmp_path).released
    assert evaluate(Gate("p", "old", max_rank=2), tmp_path).reason == "rank 3 is worse than 2"
    assert evaluate(Gate("p", "new", baseline_model="old", min_delta=5.0), tmp_path).released
    verdict = evaluate(Gate("p", "new", baseline_model="old", min_delta=6.0), tmp_path)
    assert verdict.reason == "beats old by 5.00, needs 6.0"
    assert evaluate(Gate("p", "new", baseline_model="ghost"), tmp_path).reason == "no results for the baseline ghost"


# The statistical mode, on per-example scores of real ARC-Challenge rows (doc ids 0..n-1), checked against
# scipy on the same arrays.


def arc_scores(data_root, n, right):
    """Records of the first ``n`` ARC-Challenge rows, scored 1 where ``right(doc_id)``."""
    rows = (data_root / "arc" / "arc_challenge.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    assert len(rows) == n
    return [{"task": "arc", "doc_id": i, "score": float(right(i))} for i in range(n)]


def independent_p_better(a, b, baseline=0.25, null=0.0):
    d = (np.array(a) - np.array(b)) * 100 / (1 - baseline)
    return float(sps.norm.sf((d.mean() - null) / (d.std(ddof=1) / math.sqrt(len(d)))))


def test_statistical_gate_refuses_a_higher_point_estimate_that_is_not_significant(tmp_path, data_root):
    base = arc_scores(data_root, 40, lambda i: i % 3 == 0)  # 14 of 40 right
    new = arc_scores(data_root, 40, lambda i: i % 3 == 0 or i in (1, 2, 4, 5))  # 4 more right
    new[0]["score"] = 0.0  # and one fewer: 4 up, 1 down
    store_result(tmp_path, "base", "arc", base, 0.25)
    store_result(tmp_path, "new", "arc", new, 0.25)
    assert evaluate(Gate("p", "new", baseline_model="base"), tmp_path).released  # the point estimate is higher
    verdict = evaluate(Gate("p", "new", baseline_model="base", mode="statistical"), tmp_path)
    assert not verdict.released and verdict.reason.startswith("not significantly better: new - base: +10.00 points")
    expected = independent_p_better([r["score"] for r in new], [r["score"] for r in base])
    assert verdict.evidence["p_better"] == pytest.approx(expected, rel=1e-9) and 0.05 < expected < 0.2
    assert verdict.evidence["delta"] == pytest.approx(100 * 3 / 40 / 0.75)


def test_statistical_gate_releases_on_a_significant_gain_and_holds_the_margin(tmp_path, data_root):
    base = arc_scores(data_root, 200, lambda i: i % 4 == 0)
    new = arc_scores(data_root, 200, lambda i: i % 4 == 0 or i % 4 == 1 and i < 160)  # 40 up, none down
    store_result(tmp_path, "base", "arc", base, 0.25)
    store_result(tmp_path, "new", "arc", new, 0.25)
    verdict = evaluate(Gate("p", "new", baseline_model="base", mode="statistical", min_delta=5.0), tmp_path)
    expected = independent_p_better([r["score"] for r in new], [r["score"] for r in base], null=5.0)
    assert verdict.released and verdict.evidence["p_better"] == pytest.approx(expected, rel=1e-9)
    assert verdict.reason.startswith("significantly better: new - base: +26.67 points") and expected < 1e-6

    # A second benchmark on which the new model is far worse: the gain on the average no longer releases it.
    base_mc = arc_scores(data_root, 200, lambda i: i % 2 == 0)
    new_mc = arc_scores(data_root, 200, lambda i: i % 2 == 0 and i >= 60)  # 30 down
    store_result(tmp_path, "base", "mc", base_mc, 0.25)
    store_result(tmp_path, "new", "mc", new_mc, 0.25)
    store_result(tmp_path, "new", "arc", arc_scores(data_root, 200, lambda i: i % 4 in (0, 1, 2)), 0.25)  # 100 up
    verdict = evaluate(Gate("p", "new", baseline_model="base", mode="statistical", margin=5.0), tmp_path)
    assert not verdict.released and verdict.reason.startswith(
        "significantly worse than the margin of -5.0 points on mc"
    )
    worse = {b["benchmark"]: b for b in verdict.evidence["benchmarks"]}
    d = (np.array([r["score"] for r in new_mc]) - np.array([r["score"] for r in base_mc])) * 100 / 0.75
    p_mc = float(sps.norm.cdf((d.mean() + 5.0) / (d.std(ddof=1) / math.sqrt(200))))
    assert worse["mc"]["p_worse"] == pytest.approx(p_mc, rel=1e-9) and p_mc < 0.01
    assert worse["mc"]["p_worse_adjusted"] == pytest.approx(min(1.0, 2 * p_mc), rel=1e-9)  # Holm, the smaller of 2
    assert worse["arc"]["p_worse"] > 0.99


def test_statistical_gate_refuses_bad_conditions():
    with pytest.raises(ValueError, match="set baseline_model"):
        Gate("p", "m", mode="statistical")
    with pytest.raises(ValueError, match="mode must be one of threshold, statistical"):
        Gate("p", "m", mode="bayes")
    with pytest.raises(ValueError, match="alpha is a significance level"):
        Gate("p", "m", baseline_model="b", mode="statistical", alpha=0.9)
