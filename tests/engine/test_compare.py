"""Paired comparisons (engine/compare.py) and `evaljobs compare`, on result bundles of two heuristic 'models'
answering real MMLU and ARC rows; every number is recomputed here with scipy or written-out formulas."""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats as sps

from evaljobs import cli
from evaljobs.engine import compare, leaderboard, stats
from evaljobs.engine.results import ResultsStore, write_jsonl
from tests.engine.test_stats import cr1, heuristic_records, longest, overlap
from tests.factories import result_row

SETTINGS = {"limit": 0, "num_fewshot": 0, "temperature": 0.0}


def arc_records(data_root, pick, limit=300):
    records = []
    with (data_root / "arc" / "arc_challenge.jsonl").open(encoding="utf-8") as f:
        for doc_id, line in zip(range(limit), f, strict=False):
            row = json.loads(line)
            answer = pick(row["query"], row["choices"])
            records.append({"task": "arc", "doc_id": doc_id, "score": float(answer == row["gold"])})
    return records


def continuous_records(seed, shift=0.0, n=80):
    rng = np.random.default_rng(seed)
    base = np.random.default_rng(0).beta(2, 3, size=n)  # shared difficulty: the scores are correlated
    return [
        {"task": "f1", "doc_id": i, "score": float(np.clip(v + shift + rng.normal(0, 0.1), 0, 1))}
        for i, v in enumerate(base)
    ]


def store_result(home, model, benchmark, records, baseline, subtasks=False, settings=SETTINGS, settings_hash="h"):
    bundle = home / "bundles" / model / benchmark
    write_jsonl(bundle / "samples.jsonl", records)
    values = [r["score"] for r in records]
    subscores = {}
    if subtasks:
        for task in {r["task"] for r in records}:
            subscores[task] = float(np.mean([r["score"] for r in records if r["task"] == task]))
    row = result_row(model, benchmark, float(np.mean(values)), baseline, settings_hash)
    row = replace(row, n_samples=len(values), bundle=str(bundle), settings=settings, subscores=subscores)
    return ResultsStore(home).record(row)


@pytest.fixture
def project(tmp_path, data_root):
    home = tmp_path / "results"
    models = {"a": (longest, 0.04), "b": (overlap, 0.0)}
    for model, (pick, shift) in models.items():
        store_result(home, model, "mmlu4", heuristic_records(data_root, pick), 0.25, subtasks=True)
        store_result(home, model, "arc", arc_records(data_root, pick), 0.25)
        store_result(home, model, "f1", continuous_records(1 if model == "a" else 2, shift), 0.0)
    return home


def paired_arrays(result_dir, benchmark):
    """(records, a, b) of a benchmark as the test reads them back, paired by (task, doc_id)."""
    a = {(r["task"], r["doc_id"]): r for r in stats.read_samples(result_dir / "bundles" / "a" / benchmark)}
    b = {(r["task"], r["doc_id"]): r for r in stats.read_samples(result_dir / "bundles" / "b" / benchmark)}
    keys = [k for k in a if k in b]
    return [a[k] for k in keys], np.array([a[k]["score"] for k in keys]), np.array([b[k]["score"] for k in keys])


def holm(pvalues):
    order = np.argsort(pvalues)
    adjusted, running = np.empty(len(pvalues)), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def test_every_benchmark_statistic_matches_an_independent_computation(project):
    result = compare.compare(ResultsStore(project).rows("p"), "a", "b", project="p")
    by = {r.benchmark: r for r in result.benchmarks}
    assert sorted(by) == ["arc", "f1", "mmlu4"]

    records, a, b = paired_arrays(project, "arc")
    arc, d = by["arc"], a - b
    up, down = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    ci = sps.ttest_1samp(d, 0).confidence_interval(0.95)
    assert (arc.n, arc.method, arc.flips_up, arc.flips_down, arc.clusters) == (300, "mcnemar_exact", up, down, None)
    assert arc.delta == pytest.approx(d.mean())
    assert (arc.ci_low, arc.ci_high) == pytest.approx((ci.low, ci.high))
    assert arc.p_value == pytest.approx(sps.binomtest(up, up + down, 0.5).pvalue)
    assert len(arc.flipped_up) == up and all(
        a[i] > b[i] for i, r in enumerate(records) if [r["task"], r["doc_id"]] in arc.flipped_up
    )

    records, a, b = paired_arrays(project, "mmlu4")
    mmlu = by["mmlu4"]
    se, low, high = cr1(a - b, [r["task"] for r in records])  # subjects are clusters
    assert (mmlu.n, mmlu.clusters) == (676, 4)
    assert (mmlu.ci_low, mmlu.ci_high) == pytest.approx((low, high))
    tasks = sorted({r["task"] for r in records})
    norm = [[leaderboard.normalise(x[[r["task"] == t for r in records]].mean(), 0.25) for t in tasks] for x in (a, b)]
    assert mmlu.normalised_delta == pytest.approx(np.mean(norm[0]) - np.mean(norm[1]))
    sems = [sps.sem((a - b)[[r["task"] == t for r in records]]) for t in tasks]
    assert mmlu.normalised_se == pytest.approx(math.sqrt(sum(s**2 for s in sems)) / 4 * 100 / 0.75)

    _, a, b = paired_arrays(project, "f1")
    f1 = by["f1"]
    assert f1.method == "paired_t"
    assert f1.p_value == pytest.approx(sps.ttest_1samp(a - b, 0).pvalue)
    assert f1.delta == pytest.approx(np.mean(a - b)) and f1.delta > 0.02

    pvalues = [r.p_value for r in result.benchmarks]
    assert [r.p_adjusted for r in result.benchmarks] == pytest.approx(list(holm(pvalues)))

    overall = result.overall
    deltas = [r.normalised_delta for r in result.benchmarks]
    se = math.sqrt(sum(r.normalised_se**2 for r in result.benchmarks)) / 3
    z = sps.norm.ppf(0.975)
    assert overall["delta"] == pytest.approx(np.mean(deltas))
    assert (overall["ci_low"], overall["ci_high"]) == pytest.approx(
        (np.mean(deltas) - z * se, np.mean(deltas) + z * se)
    )
    assert overall["p_one_sided"] == pytest.approx(sps.norm.sf(np.mean(deltas) / se))
    assert arc.mde == pytest.approx(stats.mde(300, (up + down) / 300))


def test_the_normalised_delta_is_the_leaderboards_when_every_example_is_paired(project):
    rows = ResultsStore(project).rows("p")
    board = {e.model: e for e in leaderboard.build("p", rows).entries}
    result = compare.compare(rows, "a", "b")
    assert result.overall["delta"] == pytest.approx(board["a"].average - board["b"].average)


def test_mismatched_settings_are_refused_naming_what_differs(project, data_root):
    store_result(
        project,
        "c",
        "arc",
        arc_records(data_root, longest, 50),
        0.25,
        settings=SETTINGS | {"limit": 50},
        settings_hash="h50",
    )
    store_result(project, "c", "mmlu4", heuristic_records(data_root, longest), 0.25, subtasks=True)
    rows = ResultsStore(project).rows("p")
    with pytest.raises(compare.ComparisonError, match=r"arc: limit 50 \(c\) vs 0 \(b\)"):
        compare.compare(rows, "c", "b")
    assert [r.benchmark for r in compare.compare(rows, "c", "b", ["mmlu4"]).benchmarks] == ["mmlu4"]
    with pytest.raises(compare.ComparisonError, match="no results for 'nobody'"):
        compare.compare(rows, "nobody", "b")


def test_identical_models_have_no_difference(project):
    rows = [r for r in ResultsStore(project).rows("p") if r.model == "a"]
    twin = [replace(r, model="twin") for r in rows]
    result = compare.compare(rows + twin, "a", "twin")
    for r in result.benchmarks:
        assert (r.delta, r.flips_up, r.flips_down, r.p_value) == (0.0, 0, 0, 1.0)


def test_cli_compare_json_and_table(project, capsys):
    assert (
        cli.main(
            [
                "compare",
                "--project",
                "p",
                "--model",
                "a",
                "--baseline",
                "b",
                "--results-home",
                str(project),
                "--format",
                "json",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out)
    expected = compare.compare(ResultsStore(project).rows("p"), "a", "b", project="p").as_dict()
    assert printed == json.loads(json.dumps(expected))
    keys = {"benchmark", "n", "delta", "ci_low", "ci_high", "p_value", "p_adjusted", "method", "flips_up", "flips_down"}
    assert all(keys <= set(row) for row in printed["benchmarks"])
    assert (
        printed["overall"]["delta"] == pytest.approx(expected["overall"]["delta"])
        and "normalised_average" in printed["mde"]
    )

    assert (
        cli.main(["compare", "--project", "p", "--model", "a", "--baseline", "b", "--results-home", str(project)]) == 0
    )
    table = capsys.readouterr().out
    assert "mmlu4" in table and "mcnemar_exact" in table and "normalised average: a - b" in table

    assert (
        cli.main(["compare", "--project", "p", "--model", "a", "--baseline", "zz", "--results-home", str(project)]) == 2
    )
    assert "no results for 'zz'" in capsys.readouterr().err


def test_leaderboard_carries_the_cis_of_the_bundles(project):
    board = leaderboard.build("p", ResultsStore(project).rows("p"))
    entry = {e.model: e for e in board.entries}["b"]
    _, _, b = paired_arrays(project, "arc")
    wilson = sps.binomtest(int(b.sum()), len(b)).proportion_ci(0.95, method="wilson")
    assert entry.score_ci["arc"].ci_low == pytest.approx(wilson.low)
    norm = [entry.normalised_ci[k] for k in ("arc", "f1", "mmlu4")]
    se = math.sqrt(sum(e.se**2 for e in norm)) / 3
    z = sps.norm.ppf(0.975)
    assert entry.average_ci == pytest.approx((entry.average - z * se, entry.average + z * se))
    row = next(r for r in json.loads(board.to_json())["rows"] if r["model"] == "b")
    assert row["ci"]["arc"] == pytest.approx([wilson.low, wilson.high], abs=1e-6)
    assert row["average_ci"] == pytest.approx(list(entry.average_ci), abs=1e-6)
    header, *lines = board.to_csv().splitlines()
    line = dict(zip(header.split(","), next(x for x in lines if ",b," in x).split(","), strict=True))
    assert float(line["arc_ci_high"]) == pytest.approx(wilson.high, abs=1e-4)
    assert (project / "bundles" / "b" / "arc" / "ci.json").is_file()  # cached: the next build reads it
    again = {e.model: e for e in leaderboard.build("p", ResultsStore(project).rows("p")).entries}["b"]
    assert again.normalised_ci == entry.normalised_ci


def test_tiers_group_models_that_cannot_be_told_apart(tmp_path, data_root):
    """Three models on 200 real ARC rows: one 4 answers behind the leader shares its tier; one 100 behind
    starts tier 2 (two comparisons: Bonferroni level 0.025). The separation is recomputed with scipy."""
    home = tmp_path / "results"

    def right(keep):  # the first 200 rows' ids, scored 1 where keep(doc_id)
        return [dict(r, score=float(keep(r["doc_id"]))) for r in arc_records(data_root, lambda q, c: 0, 200)]

    top = right(lambda i: i % 4 != 3)
    store_result(home, "top", "arc", top, 0.25)
    store_result(home, "close", "arc", right(lambda i: i % 4 != 3 and i not in (0, 1, 2, 4)), 0.25)
    store_result(home, "far", "arc", right(lambda i: i % 4 == 0), 0.25)
    board = leaderboard.build("p", ResultsStore(home).rows("p"))
    assert [(e.model, e.tier) for e in board.entries] == [("top", 1), ("close", 1), ("far", 2)]
    d = np.array([1.0 if i in (0, 1, 2, 4) else 0.0 for i in range(200)]) * 100 / 0.75
    expected = 2 * sps.norm.sf(d.mean() / (d.std(ddof=1) / math.sqrt(200)))
    assert compare.separation(board.entries[0], board.entries[1]) == pytest.approx(expected, rel=1e-9)
    assert 0.025 < expected < 0.2
    assert [r["tier"] for r in json.loads(board.to_json())["rows"]] == [1, 1, 2]
    assert [line.split(",")[-1] for line in board.to_csv().splitlines()] == ["tier", "1", "1", "2"]
