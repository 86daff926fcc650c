"""The results home on object storage, against a real S3 server (SeaweedFS, tests/objectstore.py): jobs run by
``evaljobs run`` against the latency-bound endpoint (deterministic answers) write their rows, bundles and
leaderboard to ``s3://``; readers on a fresh disk read them back; concurrent jobs lose nothing; credentials
are never written."""

from __future__ import annotations

import json
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
