"""Power before a run (engine/plan.py, `evaljobs plan`): MDEs recomputed here with scipy, the discordance
observed on a project's earlier results, and the warning for a gate that cannot see its min_delta."""

import json
import math

import pytest
from scipy import stats as sps

from evaljobs import cli
from evaljobs.engine import plan, stats
from evaljobs.engine.gate import Gate
from evaljobs.engine.results import ResultsStore
from tests.engine.test_compare import store_result
from tests.engine.test_gate import arc_scores
from tests.engine.test_stats import mcnemar_power


def test_mdes_match_an_independent_power_computation(monkeypatch, data_root):
    monkeypatch.setenv("EVALJOBS_DATA_ROOT", str(data_root))
    sizes = plan.sizes(["arc_challenge_local", "gsm8k_local"], 200)
    assert sizes == [("arc_challenge_local", 200, 0.25), ("gsm8k_local", 200, 0.0)]
    assert plan.sizes(["mmlu_marketing_local"], 0) == [("mmlu_marketing_local", 234, 0.25)]  # all its rows
    result = plan.plan(sizes)
    for planned in result.benchmarks:
        assert (planned.discordance, planned.source) == (0.2, "default")
        assert mcnemar_power(200, 0.2, planned.mde) == pytest.approx(0.80, abs=1e-4)  # exact, written out in tests
    z = sps.norm.ppf(0.975) + sps.norm.ppf(0.80)
    se = math.sqrt(0.2 / 200 * (100 / 0.75) ** 2 + 0.2 / 200 * 100**2) / 2
    assert result.normalised_average == pytest.approx(z * se, rel=1e-9)
    assert plan.plan(sizes, min_delta=result.normalised_average + 0.1).warning is None
    warning = plan.plan(sizes, min_delta=5.0).warning
    assert (
        warning.startswith("min_delta 5.0 is below what these sample sizes can detect")
        and f"{z * se:.1f} points" in warning
    )


def test_the_discordance_is_observed_on_earlier_results(tmp_path, data_root):
    base = arc_scores(data_root, 100, lambda i: i % 2 == 0)
    store_result(tmp_path, "base", "arc", base, 0.25)
    store_result(tmp_path, "a", "arc", arc_scores(data_root, 100, lambda i: i % 2 == 0 or i < 10), 0.25)  # 5 differ
    store_result(tmp_path, "b", "arc", arc_scores(data_root, 100, lambda i: i % 2 == 0 and i >= 30), 0.25)  # 15
    rows = ResultsStore(tmp_path).rows("p")
    planned = plan.plan([("arc", 100, 0.25)], rows=rows, baseline_model="base").benchmarks[0]
    assert (planned.discordance, planned.source) == (pytest.approx(0.10), "observed (2 models)")
    assert planned.mde == pytest.approx(stats.mde(100, 0.10))
    # A gate on the baseline's sample size: 100 rows cannot detect 2 points of normalised average.
    warning = plan.gate_warning(Gate("p", "new", baseline_model="base", min_delta=2.0), rows)
    assert warning and warning.startswith("min_delta 2.0 is below")
    assert plan.gate_warning(Gate("p", "new", baseline_model="base", min_delta=50.0), rows) is None


def test_cli_plan(monkeypatch, capsys, data_root):
    monkeypatch.setenv("EVALJOBS_DATA_ROOT", str(data_root))
    assert cli.main(["plan", "--benchmarks", "arc_challenge_local", "--limit", "40", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["benchmarks"][0]["n"] == 40 and out["benchmarks"][0]["mde"] == pytest.approx(stats.mde(40))
    assert cli.main(["plan", "--benchmarks", "arc_challenge_local", "--limit", "20", "--min-delta", "5"]) == 0
    text = capsys.readouterr().out
    assert "arc_challenge_local  20  0.20 (default)  not detectable" in text and "WARNING: min_delta 5.0" in text
    assert cli.main(["plan", "--benchmarks", "gsm8k", "--limit", "0"]) == 2
    assert "the size of 'gsm8k' is not known here; give a limit" in capsys.readouterr().err


def test_the_forms_limit_help_states_the_exact_mdes():
    import re

    from evaljobs.forms import LIMIT_HELP

    found = re.search(
        r"(\d+) examples detect a ([\d.]+)-point difference .*?, (\d+) detect ([\d.]+), (\d+) none", LIMIT_HELP
    )
    n1, mde1, n2, mde2, n3 = found.groups()
    assert f"{100 * stats.mde(int(n1)):.1f}" == mde1 and f"{100 * stats.mde(int(n2)):.1f}" == mde2
    assert stats.mde(int(n3)) is None and stats.DEFAULT_DISCORDANCE == 0.2  # "20 % of answers differing"
