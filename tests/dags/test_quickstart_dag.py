"""The quickstart DAG parses cleanly and, run with `airflow dags test` on SQLite, records a real job."""

import json
import re
import shutil
import sqlite3

from evaljobs.engine.results import ResultsStore
from tests.airflow_runner import canary_hits, secret_env
from tests.conftest import REPO


def test_dag_parses_with_its_form():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags["evaljobs_quickstart"]
    assert [t.task_id for t in dag.tasks] == ["serve", "evaluate", "publish", "stop"]  # the operators alone
    assert set(dag.params) == {"checkpoint", "benchmarks", "limit", "project", "publish", "wandb_mode"}


def test_dag_runs_a_job_end_to_end(airflow, model_dir, tmp_path, canaries):
    """With canaries for every secret (the W&B key in the wandb connection, in offline mode): runs, leaderboard
    run and report written, and no canary in the output, the metadata DB's XComs and rendered fields, or any
    file under the Airflow and results homes (W&B offline run files included). The tasks log progress and no
    warning; publishing emits the project's leaderboard Asset event. Re-run, every request is in the cache and
    no vLLM starts; with one cached request deleted, vLLM starts and answers exactly that one."""
    shutil.copy(REPO / "dags" / "evaljobs_quickstart.py", airflow.dags)
    conf = {"checkpoint": str(model_dir), "limit": 3, "project": "dagtest", "wandb_mode": "offline"}
    home = tmp_path / "home"
    ok, output = airflow.dags_test(
        "evaljobs_quickstart", conf=json.dumps(conf), EVALJOBS_HOME=str(home), **secret_env(canaries)
    )
    assert ok, output[-5000:]
    rows = ResultsStore(home).rows("dagtest")
    assert sorted(r.benchmark for r in rows) == ["arc_challenge_local", "gsm8k_local", "mmlu_marketing_local"]
    assert {r.n_samples for r in rows} == {3}
    assert f"report: {home / 'reports' / 'dagtest' / 'index.html'}" in output
    assert len(list((home / "wandb").glob("offline-run-*-ev-*"))) == 3
    assert len(list((home / "wandb").glob("offline-run-*-leaderboard-*"))) == 1
    stored = airflow.stored()
    [summary] = [v for v in map(json.loads, stored["xcom"]) if isinstance(v, dict) and "scores" in v]
    assert set(summary["scores"]) == {r.benchmark for r in rows} and stored["rendered_task_instance_fields"]
    assert canary_hits(canaries, {"output": output, **stored}, tmp_path) == []
    assert_clean_progress_log(output)
    scores = {r.benchmark: r.score for r in rows}
    [(uri, extra, task)] = asset_events(airflow)
    assert (uri, task) == ("evaljobs://leaderboards/dagtest", "publish")
    assert json.loads(extra) | {"average": None} == {
        "project": "dagtest",
        "model": "smollm2-135m-instruct",
        "scores": scores,
        "rank": 1,
        "average": None,
        "rows": 1,
    }

    again = airflow.dags_test("evaljobs_quickstart", conf=json.dumps(conf), EVALJOBS_HOME=str(home))
    assert again[0], again[1][-5000:]
    assert "vLLM is not started" in again[1] and "no server to stop (the request cache answered" in again[1]
    assert "vLLM serves" not in again[1] and "starting vLLM" not in again[1]
    assert "0 requests answered by the server" in again[1]
    assert {r.benchmark: r.score for r in ResultsStore(home).rows("dagtest")} == scores
    assert [uri for uri, *_ in asset_events(airflow)] == ["evaljobs://leaderboards/dagtest"] * 2

    [cache] = (home / "cache").glob("*/requests_rank0.db")
    with sqlite3.connect(cache) as db:
        cached = db.execute("SELECT count(*) FROM unnamed").fetchone()[0]
        db.execute("DELETE FROM unnamed WHERE key = (SELECT min(key) FROM unnamed)")
    once_more = airflow.dags_test("evaljobs_quickstart", conf=json.dumps(conf), EVALJOBS_HOME=str(home))
    assert once_more[0], once_more[1][-5000:]
    assert "vLLM serves" in once_more[1] and "stopped vLLM" in once_more[1]
    assert re.findall(r"(\d+) requests answered by the server", once_more[1]) == ["1"]
    assert {r.benchmark: r.score for r in ResultsStore(home).rows("dagtest")} == scores
    with sqlite3.connect(cache) as db:
        assert db.execute("SELECT count(*) FROM unnamed").fetchone()[0] == cached


def asset_events(airflow) -> list[tuple[str, str, str]]:
    """(asset URI, event extra JSON, source task) of every Asset event in the metadata DB, oldest first."""
    with sqlite3.connect(airflow.home / "airflow.db") as db:
        query = "SELECT a.uri, e.extra, e.source_task_id FROM asset_event e JOIN asset a ON a.id = e.asset_id"
        return db.execute(query + " ORDER BY e.id").fetchall()


def assert_clean_progress_log(output: str) -> None:
    """The tasks' log lines: INFO progress lines whose counts add up to what vLLM says it answered, and no
    WARNING or ERROR line (a successful run has no problem to report; lm-eval's bars used to show as ERROR)."""
    tasks = output[output.index("[DAG TEST] starting task_id=serve") :]
    # Lines with a correlation_id are the execution API's (Airflow's server side, not a task log): its asset
    # manager warns that no DAG is scheduled on the leaderboard Asset in this DAG folder
    problems = re.findall(r"^\S+ \[(?:warning|error|critical)\s*\].*$", tasks, re.M)
    assert [line for line in problems if "correlation_id=" not in line] == []
    progress = re.findall(r"\[info\s*\]\s+progress (\S+): (\d+)/(\d+) requests .*; all: (\d+)/(\d+) in", tasks)
    final = {name: (int(done), int(total)) for name, done, total, *_ in progress}
    assert sorted(final) == ["arc_challenge_local", "gsm8k_local", "mmlu_marketing_local"]
    assert all(done == total for done, total in final.values()), final
    assert final["gsm8k_local"] == (3, 3) and final["mmlu_marketing_local"] == (12, 12)  # 3 questions x 4 choices
    [answered] = re.findall(r"(\d+) requests answered by the server", tasks)
    assert sum(total for _, total in final.values()) == int(answered)
    assert {(a, s) for *_, a, s in progress if a == s} == {("3", "3"), (str(int(answered) - 3),) * 2}
