import json
import subprocess
import sys

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
    assert data["rows"][0] == {
        "rank": 1,
        "model": "a",
        "average": 30.0,
        "benchmarks": 2,
        "scores": {"mc": 0.625, "gen": 0.1},
        "normalised": {"mc": 50.0, "gen": 10.0},
    }
    assert board.to_csv().splitlines()[:2] == ["rank,model,average,gen,mc", "1,a,30.0000,0.1000,0.6250"]
    assert board.to_csv().splitlines()[3] == "3,c,100.0000,-,1.0000"
    assert "1  a" in board.to_text()


def test_slug_keeps_paths_inside_the_home():
    assert slug("../../etc/passwd") == "etc_passwd"
    assert slug("team/models/smol:v3") == "team_models_smol_v3"
    assert slug("..") == "_"
