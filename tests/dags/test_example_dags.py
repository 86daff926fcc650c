"""The example DAGs: they import cleanly and fast, their forms reject bad input, and they run for real, with
canary values for every secret they can take; no canary shows in a run's output (the task logs), its XComs and
rendered template fields in the metadata DB, or any file of the run (Airflow home, results home)."""

import json
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest

from evaljobs.engine.results import ResultsStore
from tests import factories
from tests.airflow_runner import canary_hits, secret_env
from tests.conftest import REPO

DAG_FILES = sorted(p for p in (REPO / "dags").glob("*.py"))


@pytest.fixture
def dags(airflow):
    for path in DAG_FILES:
        shutil.copy(path, airflow.dags)
    return airflow


def test_every_dag_file_imports_without_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {
        "evaljobs_quickstart",
        "evaljobs_checkpoint",
        "evaljobs_hosted",
        "evaljobs_promote",
        "evaljobs_kubernetes",
        "example_training",
    }


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_parse_time_per_file(path):
    """Parsing in a fresh interpreter, after Airflow itself is imported (what the DAG processor pays)."""
    probe = (
        "import sys, time, runpy, airflow.sdk; sys.path.insert(0, sys.argv[2]); t = time.perf_counter(); "
        "runpy.run_path(sys.argv[1]); print(time.perf_counter() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(path), str(path.parent)], capture_output=True, text=True, check=True
    )
    print(f"{path.name}: parsed in {float(out.stdout):.3f} s")


def assert_no_canary(airflow, canaries, output, root):
    stored = airflow.stored()
    assert stored["xcom"] and stored["rendered_task_instance_fields"]  # the sweep has values to search
    assert canary_hits(canaries, {"output": output, **stored}, root) == []


def form(dag_id):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags")).dags[dag_id].params


@pytest.mark.parametrize(
    ("dag_id", "conf", "message"),
    [
        ("evaljobs_checkpoint", {"benchmarks": ["gsm8kk"]}, "'gsm8kk' is not one of"),
        ("evaljobs_checkpoint", {"limit": -1}, "-1 is less than the minimum of 0"),
        ("evaljobs_checkpoint", {"benchmarks": []}, "should be non-empty"),
        ("evaljobs_hosted", {"benchmarks": ["arc_challenge"]}, "'arc_challenge' is not one of"),
        ("evaljobs_hosted", {"benchmarks": ["arc_challenge_local"]}, "'arc_challenge_local' is not one of"),
        ("evaljobs_hosted", {"base_url": "file:///etc"}, "does not match '^https?://'"),
        ("evaljobs_hosted", {"api_key_secret": "my key"}, "does not match"),
    ],
)
def test_forms_reject_bad_input_with_a_readable_message(dag_id, conf, message):
    from airflow.sdk.exceptions import ParamValidationError

    params = form(dag_id)
    with pytest.raises(ParamValidationError) as info:
        params.update(conf)  # the form validates each value as it is set
        params.validate()
    assert message in str(info.value)


@pytest.mark.parametrize(
    "dag_id", ["evaljobs_quickstart", "evaljobs_checkpoint", "evaljobs_hosted", "evaljobs_kubernetes"]
)
def test_benchmarks_are_a_pick_list_with_a_label_each(dag_id):
    from evaljobs.forms import benchmark_choices, generative_choices

    schema = form(dag_id).get_param("benchmarks").schema
    offered = generative_choices() if dag_id == "evaljobs_hosted" else benchmark_choices()
    assert schema["type"] == "array" and schema["examples"] == offered  # `examples`: the UI's multi-select
    assert list(schema["values_display"]) == offered
    assert (
        schema["values_display"]["gsm8k"] == "gsm8k (math): grade-school math word problems that take 2 to 8 steps of…"
    )


def test_every_form_is_valid_with_its_defaults():
    """What the UI refuses on open: a value the schema rejects, or an empty string where one is required."""
    for dag_id in ("evaljobs_quickstart", "evaljobs_checkpoint", "evaljobs_hosted", "evaljobs_kubernetes",
                   "evaljobs_promote", "example_training"):  # fmt: skip
        params = form(dag_id)
        params.validate()
        empty = [k for k in params if params[k] == "" and "null" not in params.get_param(k).schema.get("type", [])]
        assert empty == [], dag_id


def names_and_links(home):
    """The evaluations' names in the UI (map index -> rendered name) and the extra links stored for each task."""
    with sqlite3.connect(home / "airflow.db") as db:
        names = dict(db.execute("SELECT map_index, rendered_map_index FROM task_instance WHERE task_id = 'evaluate'"))
        rows = db.execute("SELECT task_id, map_index, key, value FROM xcom WHERE key LIKE '!_link!_%' ESCAPE '!'")
        links = {(task, index, key.removeprefix("_link_")): json.loads(value) for task, index, key, value in rows}
    return names, links


def test_checkpoint_dag_serves_evaluates_publishes_and_stops(dags, model_dir, canaries, tmp_path):
    conf = {
        "checkpoint": str(model_dir),
        "benchmarks": ["gsm8k_local", "arc_challenge_local"],
        "limit": 2,
        "project": "ckpt",
    }
    env = secret_env(canaries, wandb_connection=False)
    ok, output = dags.dags_test("evaljobs_checkpoint", conf=json.dumps(conf), EVALJOBS_HOME=str(tmp_path), **env)
    assert ok, output[-5000:]
    rows = ResultsStore(tmp_path).rows("ckpt")
    assert sorted((r.benchmark, r.n_samples) for r in rows) == [("arc_challenge_local", 2), ("gsm8k_local", 2)]
    published = json.loads((tmp_path / "leaderboards" / "ckpt.json").read_text())
    assert published["rows"][0]["model"] == "smollm2-135m-instruct"
    assert published["columns"] == ["arc_challenge_local", "gsm8k_local"]
    assert (tmp_path / "reports" / "ckpt" / "index.html").is_file()
    # The mapped evaluations log a W&B run each; the leaderboard is published once, by the publish task.
    runs = sorted(d.name.split("-", 3)[3].split("-")[0] for d in (tmp_path / "wandb").glob("offline-run-*"))
    assert runs == ["ev", "ev", "leaderboard"]
    assert "stopped vLLM at" in output
    names, links = names_and_links(dags.home)
    assert names == {0: "gsm8k_local", 1: "arc_challenge_local"}  # the mapped tasks, named by benchmark
    page = "/evaljobs/projects/ckpt/"
    assert links == {
        ("evaluate", 0, "WandbRunsLink"): "",  # offline: no W&B run to link to
        ("evaluate", 1, "WandbRunsLink"): "",
        ("evaluate", 0, "LeaderboardLink"): page,
        ("evaluate", 1, "LeaderboardLink"): page,
        ("publish", -1, "LeaderboardLink"): page,
    }
    assert_no_canary(dags, canaries, output, tmp_path)


def test_hosted_dag_with_the_form_values(dags, vllm_server, canaries, tmp_path):
    conf = factories.hosted_form(vllm_server.base_url)
    env = secret_env(canaries, wandb_connection=False)  # the key of the hosted model is TEAM_LLM_KEY
    ok, output = dags.dags_test("evaljobs_hosted", conf=json.dumps(conf), EVALJOBS_HOME=str(tmp_path), **env)
    assert ok, output[-5000:]
    [row] = ResultsStore(tmp_path).rows("hosted")
    assert (row.model, row.benchmark, row.n_samples) == ("smollm2", "gsm8k_local", 2)
    assert_no_canary(dags, canaries, output, tmp_path)


def test_training_dag_announces_its_checkpoint(dags, canaries, tmp_path):
    conf = json.dumps({"checkpoint": "/models/new"})
    ok, output = dags.dags_test("example_training", conf=conf, **secret_env(canaries))
    assert ok, output[-3000:]
    assert "Returned value was: /models/new" in output
    assert_no_canary(dags, canaries, output, tmp_path)


@pytest.mark.parametrize(("min_average", "promoted"), [(10.0, True), (90.0, False)])
def test_promotion_waits_for_the_leaderboard(dags, canaries, tmp_path, min_average, promoted):
    for benchmark, score in (("gsm8k_local", 0.3), ("arc_challenge_local", 0.5)):
        factories.record(
            tmp_path, "smollm2-135m-instruct", benchmark, score, baseline=0.25 * (benchmark != "gsm8k_local")
        )
    store = ResultsStore(tmp_path)
    assert len(store.rows("p")) == 2
    conf = {"project": "p", "model": "smollm2-135m-instruct", "min_average": min_average}
    started = time.monotonic()
    env = secret_env(canaries)
    ok, output = dags.dags_test("evaljobs_promote", conf=json.dumps(conf), EVALJOBS_HOME=str(tmp_path), **env)
    assert ok is promoted, output[-3000:]
    promotions = tmp_path / "promotions.jsonl"
    if promoted:
        [record] = [json.loads(line) for line in promotions.read_text().splitlines()]
        assert record["model"] == "smollm2-135m-instruct" and record["average"] == pytest.approx((30 + 100 / 3) / 2)
    else:
        assert not promotions.exists() and "leaderboard gate refused: average 31.67 is below 90.0" in output
    assert time.monotonic() - started < 120
    assert_no_canary(dags, canaries, output, tmp_path)


def test_kubernetes_dag_hands_pods_references_never_values(dags, canaries, tmp_path):
    """No cluster here: each benchmark's task renders its fields and stops at the cluster client. Swept: the
    run's output, XComs, rendered fields and files, and the pods the DAG's settings build (with the W&B key
    online and HF_TOKEN mapped to Kubernetes Secrets)."""
    import runpy

    from evaljobs.operators.evaluate import WandbEvalOperator
    from tests.kubernetes.manifests import pod_manifest

    env = secret_env(canaries) | {"KUBECONFIG": str(tmp_path / "absent-kubeconfig")}
    ok, output = dags.dags_test("evaljobs_kubernetes", EVALJOBS_HOME=str(tmp_path), **env)
    assert not ok and "ConfigException: Invalid kube-config file" in output, output[-3000:]
    assert_no_canary(dags, canaries, output, tmp_path)

    module, params = runpy.run_path(str(REPO / "dags" / "evaljobs_kubernetes.py")), form("evaljobs_kubernetes")
    manifests = {}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        for benchmark in params["benchmarks"]:
            operator = WandbEvalOperator(
                task_id="evaluate",
                checkpoint=params["checkpoint"],
                benchmarks=benchmark,
                server_resources={"gpus": module["GPUS"]},
                wandb_mode="online",
                execution_mode="kubernetes",
                kubernetes=module["CLUSTER"],
            )
            manifests[benchmark] = json.dumps(pod_manifest(operator))
    assert all('"secretKeyRef"' in m and "WANDB_API_KEY" in m for m in manifests.values())
    assert canary_hits(canaries, manifests) == []


def test_promotion_against_a_baseline_is_statistical(dags, canaries, tmp_path, data_root):
    """With a baseline model the promotion DAG's gate is statistical: 40 more right answers of 200 real ARC
    rows release it, with the comparison's numbers in the promotion record."""
    from tests.engine.test_compare import store_result
    from tests.engine.test_gate import arc_scores

    store_result(tmp_path, "prod", "arc", arc_scores(data_root, 200, lambda i: i % 4 == 0), 0.25)
    store_result(
        tmp_path, "new", "arc", arc_scores(data_root, 200, lambda i: i % 4 == 0 or i % 4 == 1 and i < 160), 0.25
    )
    conf = {"project": "p", "model": "new", "benchmarks": ["arc"], "baseline_model": "prod", "min_delta": 5.0}
    ok, output = dags.dags_test(
        "evaljobs_promote", conf=json.dumps(conf), EVALJOBS_HOME=str(tmp_path), **secret_env(canaries)
    )
    assert ok, output[-3000:]
    [record] = [json.loads(line) for line in (tmp_path / "promotions.jsonl").read_text().splitlines()]
    assert record["model"] == "new" and record["reason"].startswith("significantly better: new - prod: +26.67 points")
    assert record["evidence"]["baseline"] == "prod" and record["evidence"]["p_better"] < 1e-6
    assert record["evidence"]["benchmarks"][0]["n"] == 200
