"""The results home on object storage, against a real S3 server (SeaweedFS, tests/objectstore.py): jobs run by
``evaljobs run`` against the latency-bound endpoint (deterministic answers) write their rows, bundles and
leaderboard to ``s3://``; readers on a fresh disk read them back; concurrent jobs lose nothing; credentials
are never written."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evaljobs import cli
from evaljobs.engine.job import run_job
from evaljobs.engine.spec import JobSpec
from tests.latency_endpoint import MODEL, LatencyEndpoint

PROJECT = "objstore"
BENCHMARK = "mmlu_marketing_local"  # 0.3 on 10 rows of the latency endpoint's answers
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def endpoint():
    with LatencyEndpoint(0.01, 64) as running:
        yield running


def spec_data(model_dir, endpoint, job_id: str, limit: int = 10, benchmarks=(BENCHMARK,)) -> dict:
    return {
        "model": {"checkpoint": str(model_dir), "endpoint": endpoint.base_url, "model": MODEL},
        "benchmarks": list(benchmarks),
        "settings": {"limit": limit, "max_tokens": 16},
        "destination": {"project": PROJECT, "wandb": "disabled"},
        "job_id": job_id,
    }


def write_spec(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def run_cli(monkeypatch, capsys, machine: Path, *args: str) -> str:
    """``evaljobs ...`` in this process, on a machine whose disk is ``machine`` (its $EVALJOBS_HOME)."""
    monkeypatch.setenv("EVALJOBS_HOME", str(machine))
    capsys.readouterr()
    assert cli.main(list(args)) == 0
    return capsys.readouterr().out


def rows_of(objects: dict[str, bytes], prefix: str = "") -> dict[str, dict]:
    return {k: json.loads(v) for k, v in objects.items() if k.startswith(f"{prefix}rows/")}


def test_a_job_writes_to_s3_and_a_fresh_disk_reads_it_back(
    s3_server, s3_bucket, model_dir, endpoint, tmp_path, monkeypatch, capsys
):
    local = run_job(
        JobSpec.parse(
            spec_data(model_dir, endpoint, "local")
            | {"destination": {"project": PROJECT, "wandb": "disabled", "results_home": str(tmp_path / "local")}}
        ),
        log=lambda _: None,
    )
    [reference] = local.rows
    url = f"s3://{s3_bucket}/teams/evals"
    spec_file = write_spec(tmp_path / "spec.json", spec_data(model_dir, endpoint, "first"))

    started = time.monotonic()
    out = run_cli(monkeypatch, capsys, tmp_path / "job-machine", "run", "--spec", str(spec_file), "--results-home", url)
    seconds = time.monotonic() - started
    assert f"stored in {url}" in out

    objects = s3_server.objects(s3_bucket)
    settings_hash = reference.settings_hash
    row_key = f"teams/evals/rows/{PROJECT}/{MODEL}/{BENCHMARK}/{settings_hash}.json"
    assert list(rows_of(objects, "teams/evals/")) == [row_key]
    row = json.loads(objects[row_key])
    assert row["row"]["score"] == reference.score and row["row"]["n_samples"] == reference.n_samples == 10
    assert row["row"]["job_id"] == "first" and row["files"] == ["examples.json", "metrics.json", "samples.jsonl"]
    bundle = row["row"]["bundle"]
    assert bundle.startswith(f"bundles/{PROJECT}/{MODEL}/{BENCHMARK}/{settings_hash}/") and len(bundle.split("/")) == 6
    samples = objects[f"teams/evals/{bundle}/samples.jsonl"]
    assert samples == (Path(reference.bundle) / "samples.jsonl").read_bytes()
    assert json.loads(objects[f"teams/evals/{bundle}/metrics.json"])["score"] == reference.score
    board = json.loads(objects[f"teams/evals/leaderboards/{PROJECT}.json"])
    assert [(r["model"], r["scores"]) for r in board["rows"]] == [(MODEL, {BENCHMARK: reference.score})]
    assert objects[f"teams/evals/leaderboards/{PROJECT}.csv"].decode().splitlines()[0].startswith("rank,model")
    assert f"{reference.score:.3f}" in objects[f"teams/evals/reports/{PROJECT}/index.html"].decode()
    print(f"job to s3 in {seconds:.1f} s; server started in {s3_server.started_in_s:.1f} s")

    # A fresh, empty disk: the CLI's readers pull what they need from the URL alone.
    fresh = tmp_path / "fresh"
    printed = run_cli(
        monkeypatch, capsys, fresh, "leaderboard", "--project", PROJECT, "--results-home", url, "--format", "json"
    )
    read_back = json.loads(printed)
    assert read_back["rows"][0]["scores"] == {BENCHMARK: reference.score}
    assert read_back["rows"][0]["ci"] == local.leaderboard.as_dict()["rows"][0]["ci"]  # from the pulled samples
    report = tmp_path / "report"
    run_cli(
        monkeypatch,
        capsys,
        tmp_path / "fresh-2",
        "report",
        "--project",
        PROJECT,
        "--results-home",
        url,
        "--out",
        str(report),
    )
    assert (
        reference.score == 0.3
        and "0.300" in (report / "index.html").read_text()
        and list((report / "charts").glob("*.png"))
    )

    # A re-run replaces its row (same key); its bundle (another job id, other timings) is a new version beside
    # the first, which nothing names any more.
    run_cli(
        monkeypatch,
        capsys,
        tmp_path / "m3",
        "run",
        "--spec",
        str(spec_file),
        "--results-home",
        url,
        "--job-id",
        "again",
    )
    again = s3_server.objects(s3_bucket)
    assert list(rows_of(again, "teams/evals/")) == [row_key]
    replaced = json.loads(again[row_key])["row"]
    assert replaced["job_id"] == "again" and replaced["score"] == reference.score and replaced["bundle"] != bundle
    assert again[f"teams/evals/{replaced['bundle']}/samples.jsonl"] == samples
    assert {k.rsplit("/", 1)[0] for k in again if "/bundles/" in k} == {
        f"teams/evals/{bundle}",
        f"teams/evals/{replaced['bundle']}",
    }


def test_eight_concurrent_jobs_on_one_bucket_leave_eight_rows_and_one_board_of_them(
    s3_server, s3_bucket, model_dir, endpoint, tmp_path, monkeypatch
):
    """Eight `evaljobs run` processes, each on its own disk (as pods are), one settings variant each (the limit),
    publish to one bucket with no lock at all: every row is there, and the leaderboard the last of them
    wrote holds all eight, equal to the one a local results home builds from the same jobs."""
    url = f"s3://{s3_bucket}/concurrent"
    limits = range(3, 11)
    local = tmp_path / "local"
    for limit in limits:
        data = spec_data(model_dir, endpoint, f"local-{limit}", limit)
        run_job(JobSpec.parse(data | {"destination": data["destination"] | {"results_home": str(local)}}), log=str)
    expected = json.loads((local / "leaderboards" / f"{PROJECT}.json").read_text())

    processes, started = [], time.monotonic()
    for limit in limits:
        spec_file = write_spec(tmp_path / f"spec-{limit}.json", spec_data(model_dir, endpoint, f"job-{limit}", limit))
        env = os.environ | {"EVALJOBS_HOME": str(tmp_path / f"pod-{limit}")}
        command = [sys.executable, "-m", "evaljobs.cli", "run", "--spec", str(spec_file), "--results-home", url]
        processes.append(subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [p.communicate(timeout=600)[0].decode() for p in processes]
    seconds = time.monotonic() - started
    assert [p.returncode for p in processes] == [0] * 8, "\n".join(outputs)

    objects = s3_server.objects(s3_bucket)
    rows = rows_of(objects, "concurrent/")
    assert len(rows) == 8 and sorted(r["row"]["job_id"] for r in rows.values()) == sorted(f"job-{n}" for n in limits)
    board = json.loads(objects[f"concurrent/leaderboards/{PROJECT}.json"])
    assert len(board["rows"]) == 8

    def standing(b: dict) -> list:
        return [(r["variant"], r["scores"], r["average"], r["rank"]) for r in b["rows"]]

    assert standing(board) == standing(expected)
    assert objects[f"concurrent/leaderboards/{PROJECT}.csv"].decode().count("\n") == 9  # a header + 8 rows
    rebuilt = sum(out.count("rows changed while publishing: rebuilding") for out in outputs)
    print(f"8 concurrent jobs to s3 in {seconds:.1f} s; {rebuilt} rebuilds")


def test_credentials_are_never_written_to_the_bucket_logs_or_files(
    s3_server, s3_bucket, model_dir, endpoint, tmp_path, monkeypatch, capsys, caplog
):
    """Canary credentials (the server accepts any key pair): after a job and a reader, no object in the bucket,
    no line of output or log and no file on either disk holds them."""
    canaries = {
        "AWS_ACCESS_KEY_ID": "AKIACANARY" + secrets.token_hex(6).upper(),
        "AWS_SECRET_ACCESS_KEY": "canary/" + secrets.token_hex(16),
    }
    for key, value in canaries.items():
        monkeypatch.setenv(key, value)
    url = f"s3://{s3_bucket}/canary"
    spec_file = write_spec(tmp_path / "spec.json", spec_data(model_dir, endpoint, "canary"))
    summary = tmp_path / "job" / "summary.json"
    printed = run_cli(
        monkeypatch,
        capsys,
        tmp_path / "job",
        "run",
        "--spec",
        str(spec_file),
        "--results-home",
        url,
        "--summary-out",
        str(summary),
    )
    printed += run_cli(
        monkeypatch, capsys, tmp_path / "reader", "leaderboard", "--project", PROJECT, "--results-home", url
    )
    assert json.loads(summary.read_text())["results_home"] == url

    objects = s3_server.objects(s3_bucket)
    assert len(rows_of(objects, "canary/")) == 1 and len(objects) > 5
    logged = printed + capsys.readouterr().err + "\n".join(r.getMessage() for r in caplog.records)
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for value in canaries.values():
        assert not [k for k, v in objects.items() if value.encode() in v]
        assert value not in logged
        assert not [p for p, data in files.items() if value.encode() in data]


def test_the_airflow_readers_work_from_a_fresh_disk(
    s3_server, s3_bucket, model_dir, endpoint, tmp_path, monkeypatch, capsys
):
    """The comparison operator, the sensor (poke and its trigger), publishing and the UI plugin's reader, each on
    an empty disk with the URL alone. A second model's row is the first's under another name (same bundle), so
    the comparison's numbers are known: 10 paired examples, no difference."""
    import asyncio

    from evaljobs.engine import tracking
    from evaljobs.engine.job import publish
    from evaljobs.engine.objectstore import RemoteHome
    from evaljobs.operators.compare import ModelComparisonOperator
    from evaljobs.plugins import app
    from evaljobs.plugins.store import PublishedObjects
    from evaljobs.sensors.leaderboard import LeaderboardSensor
    from evaljobs.triggers.leaderboard import LeaderboardTrigger

    url = f"s3://{s3_bucket}/airflow"
    spec_file = write_spec(tmp_path / "spec.json", spec_data(model_dir, endpoint, "first"))
    run_cli(monkeypatch, capsys, tmp_path / "job", "run", "--spec", str(spec_file), "--results-home", url)
    client = s3_server.client()
    [key] = [k for k in s3_server.objects(s3_bucket) if k.startswith("airflow/rows/")]
    row = json.loads(client.get_object(Bucket=s3_bucket, Key=key)["Body"].read())
    row["row"]["model"] = "baseline-model"
    other = RemoteHome.row_key(PROJECT, "baseline-model", BENCHMARK, row["row"]["settings_hash"])
    client.put_object(Bucket=s3_bucket, Key=f"airflow/{other}", Body=json.dumps(row).encode())

    monkeypatch.setenv("EVALJOBS_HOME", str(tmp_path / "worker"))
    compared = ModelComparisonOperator(
        task_id="compare", project=PROJECT, model=MODEL, baseline="baseline-model", results_home=url
    ).execute({})
    [bench] = compared["benchmarks"]
    assert (bench["benchmark"], bench["n"], bench["delta"], bench["flips_up"], bench["flips_down"]) == (
        BENCHMARK,
        10,
        0.0,
        0,
        0,
    )

    monkeypatch.setenv("EVALJOBS_HOME", str(tmp_path / "triggerer"))
    sensor = LeaderboardSensor(task_id="gate", project=PROJECT, model=MODEL, max_rank=1, results_home=url)
    assert sensor.poke({}).is_done
    waiting = LeaderboardSensor(task_id="wait", project=PROJECT, model="unknown-model", results_home=url)
    assert not waiting.poke({}).is_done

    async def first_event():
        async for event in LeaderboardTrigger(sensor._gate().to_dict(), url, 0.1, 10).run():
            return event.payload

    assert asyncio.run(first_event())["status"] == "success"

    # The published board still has one model; publishing from another empty disk rebuilds it from both rows.
    assert len(json.loads(s3_server.objects(s3_bucket)[f"airflow/leaderboards/{PROJECT}.json"])["rows"]) == 1
    monkeypatch.setenv("EVALJOBS_HOME", str(tmp_path / "publisher"))
    board, _ = publish(PROJECT, url, tracking.WandbTarget.from_env({}, "disabled"), log=str)
    assert sorted(e.model for e in board.entries) == ["baseline-model", MODEL]

    monkeypatch.setenv("EVALJOBS_HOME", str(tmp_path / "api-server"))
    monkeypatch.setenv("AIRFLOW__EVALJOBS__RESULTS_HOME", url)
    results = app.published()
    assert isinstance(results, PublishedObjects) and results.projects() == [PROJECT]
    shown = results.leaderboard(PROJECT)
    assert sorted(r["model"] for r in shown["rows"]) == ["baseline-model", MODEL]
    assert all(r["scores"] == {BENCHMARK: 0.3} for r in shown["rows"])
    assert results.has(PROJECT, "report") and b"baseline-model" in results.read(PROJECT, "report")
    assert results.read(PROJECT, "csv").decode().count("\n") == 3
    assert results.read("../x", "json") is None and not results.has("nothing", "report")
    assert not list((tmp_path / "api-server").rglob("*"))  # the plugin reads objects, it writes nothing


def test_a_pod_gets_the_url_and_the_store_credentials_by_reference_only(s3_bucket):
    """An evaluation pod for an s3:// results home: its spec names the URL (no worker path), and the AWS variables
    mapped in ``kubernetes.secrets`` reach it as ``secretKeyRef`` alone (the test's credentials appear nowhere)."""
    from kubernetes.client import ApiClient

    from evaljobs.kubernetes.pods import evaluation_pod
    from evaljobs.kubernetes.settings import KubernetesSettings

    url = f"s3://{s3_bucket}/pods"
    data = {
        "model": {"base_url": "https://api.example.com/v1", "model": "hosted-model"},
        "benchmarks": [BENCHMARK],
        "destination": {"project": PROJECT, "results_home": url, "wandb": "disabled"},
    }
    refs = {"AWS_ACCESS_KEY_ID": "store-credentials/id", "AWS_SECRET_ACCESS_KEY": "store-credentials/secret"}
    pod = evaluation_pod(JobSpec.parse(data), KubernetesSettings(secrets=refs))
    env = {e["name"]: e for e in ApiClient().sanitize_for_serialization(pod["env_vars"])}
    assert env["AWS_ACCESS_KEY_ID"] == {
        "name": "AWS_ACCESS_KEY_ID",
        "valueFrom": {"secretKeyRef": {"name": "store-credentials", "key": "id"}},
    }
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "store-credentials", "key": "secret"}
    assert "AWS_ENDPOINT_URL" not in env  # not mapped: the pod's own environment or service account decides
    destination = json.loads(pod["annotations"]["evaljobs.io/spec"])["destination"]
    assert destination["results_url"] == url and "results_home" not in destination
    everything = json.dumps(ApiClient().sanitize_for_serialization(pod), default=str)
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in everything and os.environ["AWS_ACCESS_KEY_ID"] not in everything


def test_the_pod_operator_takes_an_object_store_home_and_refuses_a_worker_path(s3_bucket):
    """``results_home="s3://..."`` on the pod operator reaches the submitted pod's job spec; a worker path is
    refused when the DAG is parsed, naming both fixes."""
    from evaljobs.operators.evaluate import WandbEvalOperator
    from tests.kubernetes.manifests import job_spec_of, pod_manifest

    url = f"s3://{s3_bucket}/cluster"
    refs = {"AWS_ACCESS_KEY_ID": "store-credentials/id", "AWS_SECRET_ACCESS_KEY": "store-credentials/secret"}
    common = {
        "task_id": "evaluate",
        "base_url": "https://api.example.com/v1",
        "model": "hosted-model",
        "benchmarks": BENCHMARK,
        "wandb_mode": "disabled",
        "execution_mode": "kubernetes",
        "kubernetes": {"secrets": refs},
    }
    manifest = pod_manifest(WandbEvalOperator(**common, results_home=url))
    assert job_spec_of(manifest)["destination"]["results_url"] == url
    env = {e["name"]: e for e in manifest["spec"]["containers"][0]["env"]}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "store-credentials", "key": "secret"}
    with pytest.raises(ValueError, match=r"results_home '/tmp/r' is a path on the Airflow worker.*s3://bucket/prefix"):
        WandbEvalOperator(**common, results_home="/tmp/r")


DAG = """
from airflow.sdk import dag
from evaljobs.operators.evaluate import WandbEvalOperator

@dag(dag_id="to_the_bucket", schedule=None)
def to_the_bucket():
    WandbEvalOperator(task_id="evaluate", server={server!r}, benchmarks=[{benchmark!r}], project={project!r},
                      settings={{"limit": 10}}, wandb_mode="disabled", results_home={url!r},
                      object_store_conn_id="results_store")

to_the_bucket()
"""


def test_a_local_mode_task_takes_the_store_credentials_from_an_aws_connection(
    airflow, s3_server, s3_bucket, model_dir, endpoint, tmp_path
):
    """`airflow dags test` of a WandbEvalOperator whose results home is s3://: the worker has no AWS variables;
    the `aws` connection's (canary) credentials and endpoint reach the job, which writes its row to the bucket;
    the credentials show in no object, output, XCom, rendered field or file."""
    from tests.airflow_runner import canary_hits

    canaries = {"access key": "AKIACANARY" + secrets.token_hex(6).upper(), "secret key": secrets.token_hex(20)}
    airflow.env = {k: v for k, v in airflow.env.items() if not k.startswith("AWS_")}
    conn = {
        "conn_type": "aws",
        "login": canaries["access key"],
        "password": canaries["secret key"],
        "extra": {"endpoint_url": s3_server.endpoint},
    }
    url = f"s3://{s3_bucket}/dag"
    server = {"mode": "local", "base_url": endpoint.base_url, "model": MODEL, "checkpoint": str(model_dir)}
    server |= dict.fromkeys(["artifact", "pid", "log", "name", "namespace", "conn_id"])
    source = DAG.format(server=server, benchmark=BENCHMARK, project=PROJECT, url=url)
    home = tmp_path / "worker-home"
    ok, output = airflow.dags_test(
        "to_the_bucket", source, EVALJOBS_HOME=str(home), AIRFLOW_CONN_RESULTS_STORE=json.dumps(conn)
    )
    assert ok, output[-5000:]

    objects = s3_server.objects(s3_bucket)
    [row] = rows_of(objects, "dag/").values()
    assert (row["row"]["model"], row["row"]["score"], row["row"]["n_samples"]) == (MODEL, 0.3, 10)
    stored = airflow.stored()
    assert any(url in value for value in stored["xcom"])  # the summary names the URL as the results home
    texts = {"output": output, **stored, "objects": [v.decode(errors="replace") for v in objects.values()]}
    assert canary_hits(canaries, texts, airflow.home, home) == []
