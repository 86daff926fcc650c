"""A benchmark sharded over mapped tasks, then merged, through the real `airflow dags test` against the
latency-bound endpoint: the mapped tasks are named by their shard, the merge records one row and publishes,
and that row (its bundle, record for record and metric for metric) is what an unsharded task of the same DAG
recorded."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from evaljobs.engine.results import ResultsStore
from tests.engine.test_shards import same_result
from tests.latency_endpoint import MODEL, LatencyEndpoint

DAG = """
import pendulum
from airflow.sdk import DAG
from evaljobs.operators.evaluate import WandbEvalOperator
from evaljobs.operators.merge import ShardMergeOperator

server = {{"artifact": None, "checkpoint": {model!r}, "base_url": {url!r}, "model": {name!r}}}
common = dict(server=server, benchmarks="arc_challenge_local", settings={{"limit": 9}}, results_home={home!r},
              wandb_mode="disabled")
with DAG("sharded", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    shards = WandbEvalOperator.partial(task_id="evaluate", project="sharded", shards=3, publish_leaderboard=False,
                                       **common).expand(shard=[0, 1, 2])
    ShardMergeOperator(task_id="merge", parts=shards.output, wandb_mode="disabled")
    WandbEvalOperator(task_id="single", project="single", **common)
"""


def test_mapped_shards_then_one_merge_equal_an_unsharded_task(airflow, model_dir, tmp_path):
    home = tmp_path / "home"
    with LatencyEndpoint(0.005, 16) as endpoint:
        source = DAG.format(model=str(model_dir), url=endpoint.base_url, name=MODEL, home=str(home))
        ok, output = airflow.dags_test("sharded", source, EVALJOBS_HOME=str(home))
    assert ok, output[-4000:]
    with sqlite3.connect(airflow.home / "airflow.db") as db:
        names = db.execute(
            "SELECT map_index, rendered_map_index FROM task_instance WHERE task_id = 'evaluate' ORDER BY map_index"
        ).fetchall()
        [(merged_xcom,)] = db.execute(
            "SELECT value FROM xcom WHERE task_id = 'merge' AND key = 'return_value'"
        ).fetchall()
    assert [n for (_, n) in names] == ["arc_challenge_local 1/3", "arc_challenge_local 2/3", "arc_challenge_local 3/3"]
    [merged] = ResultsStore(home).rows("sharded")
    [single] = ResultsStore(home).rows("single")
    same_result(merged, single)
    assert json.loads(merged_xcom)["arc_challenge_local"]["scores"] == {"arc_challenge_local": single.score}
    board = json.loads((home / "leaderboards" / "sharded.json").read_text())
    assert [r["model"] for r in board["rows"]] == [merged.model]
    assert (Path(merged.bundle) / "metrics.json").is_file()
