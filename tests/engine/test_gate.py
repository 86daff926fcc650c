import pytest

from evaljobs.engine.gate import Gate, evaluate
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
