"""An evaluation that publishes itself emits its project's leaderboard Asset event (`airflow dags test`, the
event read back from the metadata DB), and the Asset a DAG schedules on is the one the event names. The
quickstart DAG test covers LeaderboardPublishOperator's event."""

from __future__ import annotations

import json
import sqlite3

from evaljobs.assets import LEADERBOARDS, leaderboard_asset
from evaljobs.engine import leaderboard
from evaljobs.engine.results import ResultsStore
from tests.latency_endpoint import MODEL, LatencyEndpoint

DAG = """
from airflow.sdk import dag
from evaljobs.operators.evaluate import WandbEvalOperator

@dag(dag_id="publishes_itself", schedule=None)
def publishes_itself():
    WandbEvalOperator(task_id="evaluate", server={server!r}, benchmarks=["arc_challenge_local"],
                      project="team/assets", settings={{"limit": 3}}, wandb_mode="disabled")

publishes_itself()
"""


def test_an_evaluation_that_publishes_emits_the_leaderboard_event(airflow, model_dir, tmp_path):
    home = tmp_path / "home"
    with LatencyEndpoint(0.01, 16) as endpoint:
        server = {"mode": "local", "base_url": endpoint.base_url, "model": MODEL, "checkpoint": str(model_dir)}
        server |= dict.fromkeys(["artifact", "pid", "log", "name", "namespace", "conn_id"])
        ok, output = airflow.dags_test("publishes_itself", DAG.format(server=server), EVALJOBS_HOME=str(home))
    assert ok, output[-5000:]
    [row] = ResultsStore(home).rows("team/assets")
    with sqlite3.connect(airflow.home / "airflow.db") as db:
        query = "SELECT a.uri, e.extra, e.source_task_id FROM asset_event e JOIN asset a ON a.id = e.asset_id"
        [(uri, extra, task)] = db.execute(query).fetchall()
        [(alias,)] = db.execute("SELECT name FROM asset_alias").fetchall()
    assert (uri, task, alias) == (leaderboard_asset("team/assets").uri, "evaluate", LEADERBOARDS.name)
    assert uri == "evaljobs://leaderboards/team/assets"
    [ranked] = leaderboard.build("team/assets", [row]).as_dict()["rows"]
    assert json.loads(extra) == {
        "project": "team/assets",
        "model": MODEL,
        "scores": {"arc_challenge_local": row.score},
        "rank": 1,
        "average": ranked["average"],
        "rows": 1,
    }
