import json
import subprocess
import sys
from dataclasses import replace

import pytest

from evaljobs.engine import leaderboard
from evaljobs.engine.results import ResultsStore, slug
from tests.factories import result_row as row


def test_rerun_replaces_instead_of_duplicating(tmp_path):
    store = ResultsStore(tmp_path)
    store.record(row(score=0.4))
    store.record(row(score=0.6))
    store.record(row(score=0.7, settings_hash="other"))
    rows = store.rows("p")
    assert [(r.settings_hash, r.score) for r in rows] == [("h", 0.6), ("other", 0.7)]
    assert store.rows("elsewhere") == []


WRITER = """
import sys
from evaljobs.engine.results import ResultRow, ResultsStore
store = ResultsStore(sys.argv[1])
worker = int(sys.argv[2])
for i in range(25):
    for model in (f"w{worker}", "shared"):
        store.record(ResultRow(project="p", model=model, benchmark=f"b{i}", settings_hash="h", job_id=str(worker),
                               category="c", metric="acc,none", score=i / 25, baseline=0.0, n_samples=1,
                               metrics={}, bundle=""))
"""


def test_eight_concurrent_writers_lose_and_duplicate_nothing(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(w)]) for w in range(8)]
    assert [p.wait(120) for p in procs] == [0] * 8
    rows = ResultsStore(tmp_path).rows("p")
    assert len(rows) == 8 * 25 + 25  # each worker's own rows, plus one shared row per benchmark
    assert len({(r.model, r.benchmark) for r in rows}) == len(rows)


def test_normalise():
    assert leaderboard.normalise(0.25, 0.25) == 0.0
    assert leaderboard.normalise(1.0, 0.25) == 100.0
    assert leaderboard.normalise(0.625, 0.25) == pytest.approx(50.0)
    assert leaderboard.normalise(0.1, 0.25) == 0.0  # below random is clipped
    assert leaderboard.normalise(0.3, 0.0) == pytest.approx(30.0)


def test_leaderboard_ranks_by_normalised_average():
    rows = [
        row("a", "mc", 0.625),
        row("a", "gen", 0.1, 0.0),
        row("b", "mc", 0.25),
        row("b", "gen", 0.5, 0.0),
        row("c", "mc", 1.0),
    ]
    board = leaderboard.build("p", rows)
    assert board.benchmarks == ["gen", "mc"]
    # a: (50 + 10) / 2 = 30; b: (0 + 50) / 2 = 25; c has one benchmark only, so it ranks after full rows.
    assert [(e.model, round(e.average, 6)) for e in board.entries] == [("a", 30.0), ("b", 25.0), ("c", 100.0)]
    data = json.loads(board.to_json())
    assert data["columns"] == ["gen", "mc"] and data["variants"] == {}
    assert data["rows"][0] == {
        "rank": 1,
        "model": "a",
        "variant": "",
        "settings_hash": "h",
        "average": 30.0,
        "benchmarks": 2,
        "scores": {"mc": 0.625, "gen": 0.1},
        "normalised": {"mc": 50.0, "gen": 10.0},
        "evaluated_at": "",
        "average_ci": None,  # these rows have no bundle (no per-example scores): no CIs
        "ci": {"mc": None, "gen": None},
        "normalised_ci": {"mc": None, "gen": None},
        "tier": None,  # nor tiers
    }
    csv_lines = board.to_csv().splitlines()
    assert csv_lines[:2] == [
        "rank,model,variant,average,benchmarks,evaluated_at,gen,mc,"
        "average_ci_low,average_ci_high,gen_ci_low,gen_ci_high,mc_ci_low,mc_ci_high,tier",
        "1,a,,30.0000,2,,0.1000,0.6250,-,-,-,-,-,-,",
    ]
    assert csv_lines[3] == "3,c,,100.0000,1,,-,1.0000,-,-,-,-,-,-,"
    assert "1  a" in board.to_text()


def test_slug_keeps_paths_inside_the_home():
    assert slug("../../etc/passwd") == "etc_passwd"
    assert slug("team/models/smol:v3") == "team_models_smol_v3"
    assert slug("..") == "_"


def test_ties_share_a_rank_and_missing_benchmarks_rank_after_full_rows():
    rows = [row("a", "x", 0.5), row("b", "x", 0.5), row("c", "x", 0.75), row("d", "x", 0.5), row("e", "y", 1.0)]
    rows += [row(m, "y", 0.5) for m in "abcd"]
    board = leaderboard.build("p", rows)
    assert [(e.rank, e.model) for e in board.entries] == [(1, "c"), (2, "a"), (2, "b"), (2, "d"), (5, "e")]


def test_subtasks_are_normalised_one_by_one_then_averaged():
    # 0.25 and 0.75 average to 0.5 -> 33.3 if normalised as a whole; per subtask it is (0 + 66.7) / 2.
    grouped = replace(row("m", "mmlu", 0.5), subscores={"mmlu_a": 0.25, "mmlu_b": 0.75, "mmlu_c": 0.1})
    [entry] = leaderboard.build("p", [grouped]).entries
    assert entry.scores == {"mmlu": 0.5}
    assert entry.normalised["mmlu"] == pytest.approx((0 + 200 / 3 + 0) / 3)


def test_other_settings_make_another_row_labelled_with_what_differs(tmp_path):
    store = ResultsStore(tmp_path)
    store.record(replace(row("m", "x", 0.5, settings_hash="h40"), settings={"limit": 40, "seed": 1}))
    store.record(replace(row("m", "x", 0.7, settings_hash="hall"), settings={"limit": 0, "seed": 1}))
    store.record(replace(row("n", "x", 0.6, settings_hash="h40"), settings={"limit": 40, "seed": 1}))
    board = leaderboard.build("p", store.rows("p"))
    assert [(e.label, e.scores["x"]) for e in board.entries] == [
        ("m [limit=0]", 0.7),
        ("n [limit=40]", 0.6),
        ("m [limit=40]", 0.5),
    ]
    assert board.variants == {"h40": {"limit": 40, "seed": 1}, "hall": {"limit": 0, "seed": 1}}
    assert leaderboard.build("p", store.rows("p")[:1]).entries[0].label == "m"  # one settings: no label


def test_a_store_from_before_settings_and_subscores_gains_the_columns(tmp_path):
    import sqlite3

    conn = sqlite3.connect(tmp_path / "results.sqlite")
    conn.execute(
        "CREATE TABLE results (project TEXT, model TEXT, benchmark TEXT, settings_hash TEXT, job_id TEXT, "
        "category TEXT, metric TEXT, score REAL, baseline REAL, n_samples INTEGER, metrics TEXT, bundle TEXT, "
        "recorded_at TEXT, PRIMARY KEY (project, model, benchmark, settings_hash))"
    )
    conn.execute("INSERT INTO results VALUES ('p','old','x','h','j','c','acc,none',0.5,0,3,'{}','/b','2026-01-01')")
    conn.commit()
    conn.close()
    store = ResultsStore(tmp_path)
    store.record(replace(row("new", "x", 0.6), subscores={"x1": 0.6}, settings={"limit": 3}))
    assert [(r.model, r.settings, r.subscores) for r in store.rows("p")] == [
        ("old", {}, {}),
        ("new", {"limit": 3}, {"x1": 0.6}),
    ]


def test_rows_from_wandb_and_the_local_store_merge_newest_first():
    from evaljobs.engine.job import merge_rows

    remote = [
        replace(row("m", "x", 0.1), recorded_at="2026-01-02"),
        replace(row("n", "x", 0.2), recorded_at="2026-01-01"),
    ]
    local = [
        replace(row("m", "x", 0.3), recorded_at="2026-01-03"),
        replace(row("n", "x", 0.4), recorded_at="2025-12-31"),
    ]
    merged = merge_rows(remote, local)
    assert [(r.model, r.score) for r in merged] == [("n", 0.2), ("m", 0.3)]  # per key the newer, oldest first
