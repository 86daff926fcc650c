"""The operators in real `airflow dags test` runs: a served checkpoint evaluated by mapped tasks and always
stopped by its teardown, a hosted model with a team secret, and argument errors at DAG-parse time."""

import re

import pytest

from evaljobs.engine.errors import SpecError
from evaljobs.engine.results import ResultsStore
from evaljobs.operators.evaluate import WandbEvalOperator

CHECKPOINT_DAG = """
from airflow.sdk import dag
from evaljobs.operators.evaluate import WandbEvalOperator
from evaljobs.operators.serve import VLLMServeOperator, VLLMStopOperator

@dag(dag_id="served", schedule=None)
def served():
    serve = VLLMServeOperator(task_id="serve", checkpoint={model!r}, server_resources={{"max_model_len": 1024}})
    evaluate = WandbEvalOperator.partial(
        task_id="evaluate", server=serve.output, project="ops", settings={{"limit": 3, "max_tokens": 64}},
        results_home={home!r},
    ).expand(benchmarks={benchmarks!r})
    stop = VLLMStopOperator(task_id="stop", server=serve.output).as_teardown(setups=serve)
    serve >> evaluate >> stop

served()
"""


def server_pid(output: str) -> int:
    return int(re.search(r"vLLM serves \S+ at \S+ \(pid (\d+)", output).group(1))


def assert_gone(pid: int) -> None:
    from evaljobs.engine.serving import group_alive

    assert not group_alive(pid)


def test_served_checkpoint_mapped_over_benchmarks(airflow, model_dir, tmp_path):
    source = CHECKPOINT_DAG.format(
        model=str(model_dir), home=str(tmp_path / "home"), benchmarks=["gsm8k_local", "arc_challenge_local"]
    )
    ok, output = airflow.dags_test("served", source)
    assert ok, output[-5000:]
    rows = ResultsStore(tmp_path / "home").rows("ops")
    assert sorted((r.benchmark, r.n_samples) for r in rows) == [("arc_challenge_local", 3), ("gsm8k_local", 3)]
    assert_gone(server_pid(output))


def test_teardown_stops_the_server_when_an_evaluation_fails(airflow, model_dir, tmp_path):
    source = CHECKPOINT_DAG.format(
        model=str(model_dir), home=str(tmp_path / "home"), benchmarks=["gsm8k_local", str(tmp_path / "absent.yaml")]
    )
    ok, output = airflow.dags_test("served", source)
    assert not ok
    assert "absent.yaml: (file): no such file" in output
    assert [r.benchmark for r in ResultsStore(tmp_path / "home").rows("ops")] == ["gsm8k_local"]  # kept
    assert_gone(server_pid(output))


HOSTED_DAG = """
from airflow.sdk import dag
from evaljobs.operators.evaluate import WandbEvalOperator

@dag(dag_id="hosted", schedule=None)
def hosted():
    WandbEvalOperator(task_id="evaluate", base_url={url!r}, model="smollm2", api_key_secret="TEAM_LLM_KEY",
                      benchmarks="gsm8k_local", project="hosted", settings={{"limit": 2, "max_tokens": 64}},
                      results_home={home!r})

hosted()
"""


def test_hosted_model_with_a_team_secret(airflow, vllm_server, api_key, tmp_path):
    source = HOSTED_DAG.format(url=vllm_server.base_url, home=str(tmp_path / "home"))
    ok, output = airflow.dags_test("hosted", source, AIRFLOW_VAR_TEAM_LLM_KEY=api_key)
    assert ok, output[-5000:]
    [row] = ResultsStore(tmp_path / "home").rows("hosted")
    assert (row.model, row.n_samples) == ("smollm2", 2)
    assert api_key not in output
    for path in (tmp_path / "home").rglob("*"):
        assert not path.is_file() or api_key.encode() not in path.read_bytes(), path


def test_hosted_model_without_its_secret_names_it(airflow, vllm_server, tmp_path):
    source = HOSTED_DAG.format(url=vllm_server.base_url, home=str(tmp_path / "home"))
    ok, output = airflow.dags_test("hosted", source)
    assert not ok
    assert (
        "secret TEAM_LLM_KEY (model.api_key_secret) is not set; add it as a team secret (Airflow: a Variable" in output
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"benchmarks": "gsm8kk", "checkpoint": "/m"}, ValueError, "unknown benchmark 'gsm8kk'; did you mean gsm8k"),
        (
            {"benchmarks": "gsm8k", "checkpoint": "/m", "settings": {"limit": -1}},
            SpecError,
            "limit: Input should be greater than or equal to 0 (got -1)",
        ),
        (
            {"benchmarks": "gsm8k", "checkpoint": "/m", "server_resources": {"gpus": 3}},
            SpecError,
            "gpus 3 is over the limit of 2 GPUs a job (resources.max_gpus)",
        ),
        (
            {"benchmarks": "gsm8k", "checkpoint": "/m", "judge": {"api_key_secret": "not a name"}},
            SpecError,
            "api_key_secret: 'not a name' is not a secret name; use letters, digits and _",
        ),
        (
            {"benchmarks": "gsm8k", "checkpoint": "/m", "datasets": {"mirorr": "/data"}},
            SpecError,
            "mirorr: unknown field; remove it or check its spelling",
        ),
        (
            {"benchmarks": "gsm8k"},
            ValueError,
            "give exactly one model source (server, checkpoint or base_url); got none",
        ),
        (
            {"benchmarks": "gsm8k", "checkpoint": "/m", "base_url": "http://h"},
            ValueError,
            "got ['checkpoint', 'base_url']",
        ),
        (
            {"benchmarks": "gsm8k", "checkpoint": "/m", "execution_mode": "cloud"},
            ValueError,
            "execution_mode 'cloud' is not available",
        ),
    ],
)
def test_argument_errors_fail_when_the_dag_is_parsed(kwargs, error, message):
    with pytest.raises(error) as info:
        WandbEvalOperator(task_id="t", **kwargs)
    assert message in str(info.value)


def test_templated_arguments_wait_for_the_run():
    op = WandbEvalOperator(
        task_id="t",
        checkpoint="{{ params.model }}",
        benchmarks="{{ params.benchmark }}",
        settings={"limit": "{{ params.limit }}"},
    )
    assert "settings" in op.template_fields and op.benchmarks == "{{ params.benchmark }}"


def test_secret_names_never_values_in_the_job_spec():
    op = WandbEvalOperator(task_id="t", base_url="http://h/v1", model="m", api_key_secret="K", benchmarks="gsm8k")

    class TI:
        map_index = -1

    spec = op.job_spec({"run_id": "manual__2026-01-01T00:00:00+00:00", "ti": TI()})
    assert spec["model"] == {"model": "m", "base_url": "http://h/v1", "api_key_secret": "K", "api": "chat"}
    assert (spec["judge"], spec["datasets"]) == ({}, {})  # the job's defaults
    assert spec["job_id"] == "manual__2026-01-01T00_00_00_00_00-t--1"


def test_judge_and_datasets_reach_the_job_and_name_their_secrets():
    from evaljobs.engine.preflight import secret_names
    from evaljobs.engine.spec import JobSpec

    judge = {"model": "grader-1", "base_url": "https://judge.example.com/v1", "api_key_secret": "JUDGE_KEY"}
    hosted = {"base_url": "http://h/v1", "model": "m", "api_key_secret": "K"}
    datasets = {"hf_token_secret": "TEAM_HF"}
    op = WandbEvalOperator(task_id="t", benchmarks=["simpleqa", "lingoly"], judge=judge, datasets=datasets, **hosted)

    class TI:
        map_index = -1

    spec = JobSpec.parse(op.job_spec({"run_id": "r", "ti": TI()}))
    assert (spec.judge.model, spec.judge.base_url) == ("grader-1", "https://judge.example.com/v1")
    assert secret_names(spec) == ["K", "TEAM_HF", "JUDGE_KEY"]  # what the task resolves for the job
