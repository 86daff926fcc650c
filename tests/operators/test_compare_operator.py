"""ModelComparisonOperator: the comparison `evaljobs compare` and the Python API give, as a task's XCom."""

import pytest
from airflow.exceptions import AirflowException

from evaljobs.engine import compare
from evaljobs.engine.results import ResultsStore
from evaljobs.operators.compare import ModelComparisonOperator
from tests.engine.test_compare import SETTINGS, store_result
from tests.engine.test_gate import arc_scores


def test_the_operator_returns_the_comparison_and_refuses_mismatched_settings(tmp_path, data_root):
    store_result(tmp_path, "prod", "arc", arc_scores(data_root, 120, lambda i: i % 3 == 0), 0.25)
    store_result(tmp_path, "new", "arc", arc_scores(data_root, 120, lambda i: i % 3 in (0, 1) and i < 90), 0.25)
    operator = ModelComparisonOperator(
        task_id="compare", project="p", model="new", baseline="prod", results_home=str(tmp_path)
    )
    got = operator.execute({})
    expected = compare.compare(ResultsStore(tmp_path).rows("p"), "new", "prod", project="p").as_dict()
    assert got == expected
    [arc] = got["benchmarks"]
    assert (arc["n"], arc["flips_up"], arc["flips_down"], arc["method"]) == (120, 30, 10, "mcnemar_exact")

    other = SETTINGS | {"limit": 50}
    store_result(
        tmp_path, "x", "arc", arc_scores(data_root, 50, lambda i: True), 0.25, settings=other, settings_hash="h2"
    )
    mismatched = ModelComparisonOperator(
        task_id="c", project="p", model="x", baseline="prod", results_home=str(tmp_path)
    )
    with pytest.raises(AirflowException, match=r"arc: limit 50 \(x\) vs 0 \(prod\)"):
        mismatched.execute({})
