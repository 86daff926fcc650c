"""A benchmark sharded over jobs and merged equals the one-job result, against the latency-bound endpoint
(deterministic answers): the strided slices, the parts, the refusals of a merge that cannot be exact, and the
settings' validation. tests/test_shards_vllm.py does the same on real vLLM answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaljobs import cli
from evaljobs.engine.errors import SpecError
from evaljobs.engine.job import run_job
from evaljobs.engine.results import ResultsStore
from evaljobs.engine.shards import ShardError, merge, read_parts, rows_of
from evaljobs.engine.spec import JobSpec
from tests.latency_endpoint import MODEL, LatencyEndpoint

LIMIT, SHARDS = 9, 2
BENCHMARKS = ["arc_challenge_local", "gsm8k_local"]  # gsm8k: two filters, each value merged
GROUP, SUBJECTS = "mmlu_pair_local", ["mmlu_marketing_local", "mmlu_high_school_geography_local"]


@pytest.fixture
def grouped(monkeypatch, tmp_path) -> str:
    """A benchmark that is an lm-eval group of registered tasks, as MMLU is: two MMLU subjects (their catalog
    tasks as lm-eval YAML) averaged by size, in lm-eval's task index and the catalog for this test, so the
    job and the merge resolve it as a built-in."""
    import yaml
    from bench.common import task_yaml
    from lm_eval.tasks import TaskManager

    from evaljobs.engine import catalog

    folder = tmp_path / "tasks"
    folder.mkdir()
    for name in SUBJECTS:  # zero-shot: short prompts (a CPU serves them in tests/test_shards_vllm.py)
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(yaml.safe_load(task_yaml(name)) | {"num_fewshot": 0}))
    metrics = [{"metric": "acc", "weight_by_size": True}, {"metric": "acc_norm", "weight_by_size": True}]
    group = {"group": GROUP, "task": SUBJECTS, "aggregate_metric_list": metrics, "metadata": {"version": 1}}
    (folder / f"{GROUP}.yaml").write_text(yaml.safe_dump(group))
    original = TaskManager.__init__

    def index_only_these(self, *args, include_path=None, include_defaults=True, **kwargs):
        original(self, *args, include_path=str(folder), include_defaults=False, **kwargs)

    monkeypatch.setattr(TaskManager, "__init__", index_only_these)
    member = catalog.load(SUBJECTS[0])
    benchmark = catalog.Benchmark(
        name=GROUP, category="knowledge", output="multiple_choice", metric="acc,none", baseline=0.25, lm_eval=GROUP
    )
    assert benchmark.builtin and member.output == benchmark.output
    resolve, load = catalog.resolve, catalog.load
    monkeypatch.setattr(catalog, "resolve", lambda name: benchmark if name == GROUP else resolve(name))
    monkeypatch.setattr(catalog, "load", lambda name: benchmark if name == GROUP else load(name))
    return GROUP


def spec(model_dir, home: Path, project: str, endpoint: str, shard: int | None = None, **settings) -> JobSpec:
    sharded = {"shards": SHARDS, "shard": shard} if shard is not None else {}
    benchmarks = settings.pop("benchmarks", BENCHMARKS)
    return JobSpec.parse(
        {
            "model": {"checkpoint": str(model_dir), "endpoint": endpoint, "model": MODEL},
            "benchmarks": benchmarks,
            "settings": {"limit": LIMIT, "max_tokens": 16} | sharded | settings,
            "destination": {"project": project, "results_home": str(home), "wandb": "disabled"},
            "job_id": f"{project}-{shard}",
        }
    )


def bundle(row) -> tuple[dict, list[dict]]:
    folder = Path(row.bundle)
    metrics = json.loads((folder / "metrics.json").read_text())
    return metrics, [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines()]


def same_result(merged, single) -> None:
    """Record for record and metric for metric (what differs is the job's: its id, timing, the shards)."""
    (a, records_a), (b, records_b) = bundle(merged), bundle(single)
    assert records_a == records_b
    for key in ("score", "metrics", "subscores", "n_samples", "ci", "harness", "settings_hash", "benchmark"):
        assert a[key] == b[key], key
    assert (merged.score, merged.metrics, merged.n_samples) == (single.score, single.metrics, single.n_samples)


def test_sharded_jobs_merged_equal_one_job(model_dir, tmp_path):
    home = tmp_path / "home"
    with LatencyEndpoint(0.005, 16) as endpoint:
        parts = [run_job(spec(model_dir, home, "sharded", endpoint.base_url, k)) for k in range(SHARDS)]
        sent = endpoint.stats()["requests"]
        single = run_job(spec(model_dir, home, "single", endpoint.base_url))
        assert endpoint.stats()["requests"] == sent  # the shards' rows are the one job's: the cache answers all
    assert all(p.rows == [] for p in parts) and ResultsStore(home).rows("sharded") == []
    folders = {p.summary()["shard_parts"][b] for p in parts for b in BENCHMARKS}
    assert len(folders) == len(BENCHMARKS)
    for folder in folders:
        headers = read_parts(Path(folder))
        assert [h["shard"] for h in headers] == [0, 1] and [h["n_samples"] for h in headers] == [5, 4]
        rows = [json.loads(line)["doc_id"] for line in (Path(folder) / "1.samples.jsonl").read_text().splitlines()]
        assert rows == [1, 3, 5, 7]  # strided, after the limit

    merged = [merge(Path(f), log=lambda _: None) for f in sorted(folders)]
    stored = {r.benchmark: r for r in ResultsStore(home).rows("sharded")}
    assert sorted(stored) == sorted(BENCHMARKS)  # one row a benchmark: the leaderboard sees one result
    singles = {r.benchmark: r for r in single.rows}
    for result in merged:
        [row] = result.rows
        same_result(row, singles[row.benchmark])
        assert result.leaderboard.as_dict()["rows"][0]["model"] == row.model
    board = json.loads((home / "leaderboards" / "sharded.json").read_text())
    assert len(board["rows"]) == 1


def test_a_grouped_benchmark_merges_as_its_group_aggregates(model_dir, tmp_path, grouped):
    """Each subject is sliced on its own; the merge gives lm-eval the group, which weights them by size."""
    home = tmp_path / "home"
    with LatencyEndpoint(0.005, 16) as endpoint:
        parts = [run_job(spec(model_dir, home, "g", endpoint.base_url, k, benchmarks=[grouped])) for k in (0, 1)]
        single = run_job(spec(model_dir, home, "g1", endpoint.base_url, benchmarks=[grouped]))
    [folder] = {p.summary()["shard_parts"][grouped] for p in parts}
    assert read_parts(Path(folder))[1]["rows"] == dict.fromkeys(SUBJECTS, LIMIT)
    [row] = merge(Path(folder), log=lambda _: None).rows
    [one] = single.rows
    same_result(row, one)
    assert sorted(row.subscores) == sorted(SUBJECTS) and row.n_samples == 2 * LIMIT


def test_a_missing_shard_is_named_and_nothing_recorded(model_dir, tmp_path):
    home = tmp_path / "home"
    with LatencyEndpoint(0.005, 16) as endpoint:
        part = run_job(spec(model_dir, home, "half", endpoint.base_url, 1, limit=4))
    folder = part.summary()["shard_parts"]["arc_challenge_local"]
    with pytest.raises(ShardError, match=r"1 of 2 shards have not finished \(shard 0\)"):
        merge(Path(folder))
    assert cli.main(["merge", folder]) == 2
    assert ResultsStore(home).rows("half") == []


def test_strided_rows_and_too_many_shards():
    assert {k: list(v) for k, v in rows_of({"a": 5, "b": 3}, 1, 3, "x").items()} == {"a": [1, 4], "b": [1]}
    with pytest.raises(Exception, match=r"shard 3 of 4 has no row of b \(3 rows\); use at most 3 shards"):
        rows_of({"a": 5, "b": 3}, 3, 4, "x")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"shard": 1}, "settings.shard: shard 1 needs shards > 1"),
        ({"shards": 4, "shard": 4}, "settings.shard: 4 is not one of 4 shards; give shard 0..3"),
        ({"shards": 0}, "settings.shards: Input should be greater than or equal to 1"),
        ({"shards": 2, "shard": -1}, "settings.shard: Input should be greater than or equal to 0"),
        ({"shards": 2, "backend": "inspect"}, "settings.shards: shards > 1 needs backend lm_eval"),
    ],
)
def test_bad_shard_settings_are_refused_naming_the_field(settings, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        JobSpec.parse({"model": {"checkpoint": "/m"}, "benchmarks": ["arc_challenge_local"], "settings": settings})
    assert len(caught.value.problems) == 1


def test_a_sharded_job_without_its_shard_is_refused_before_any_request(model_dir, tmp_path):
    with LatencyEndpoint(0.005, 16) as endpoint:
        job = spec(model_dir, tmp_path, "p", endpoint.base_url, shards=2)
        with pytest.raises(SpecError, match=r"settings.shard: a job with settings.shards = 2 evaluates one shard"):
            run_job(job)
        assert endpoint.stats()["requests"] == 0


def test_shards_on_two_machines_merged_on_a_third_through_s3(s3_server, s3_bucket, model_dir, tmp_path, monkeypatch):
    """An object-store results home: each shard job (its own disk) puts its part in the bucket and prints the
    part's URL; `evaljobs merge URL` on a fresh disk pulls the parts, records the row there and publishes."""
    url = f"s3://{s3_bucket}/evals"
    with LatencyEndpoint(0.005, 16) as endpoint:
        single = run_job(spec(model_dir, tmp_path / "local", "s3", endpoint.base_url, benchmarks=BENCHMARKS[:1]))
        folders = set()
        for k in range(SHARDS):
            monkeypatch.setenv("EVALJOBS_HOME", str(tmp_path / f"machine-{k}"))
            part = run_job(spec(model_dir, url, "s3", endpoint.base_url, k, benchmarks=BENCHMARKS[:1]))
            folders |= set(part.summary()["shard_parts"].values())
    [folder] = folders
    assert folder.startswith(f"{url}/shards/s3/")
    names = sorted(k.rsplit("/", 1)[1] for k in s3_server.objects(s3_bucket) if "/shards/" in k)
    assert names == ["0.json", "0.samples.jsonl", "0.values.jsonl", "1.json", "1.samples.jsonl", "1.values.jsonl"]
    monkeypatch.setenv("EVALJOBS_HOME", str(tmp_path / "merger"))
    assert cli.main(["merge", folder]) == 0
    objects = s3_server.objects(s3_bucket)
    [row_key] = [k for k in objects if k.startswith("evals/rows/s3/")]
    assert json.loads(objects[row_key])["row"]["score"] == single.rows[0].score
    board = json.loads(objects["evals/leaderboards/s3.json"])
    assert [r["scores"] for r in board["rows"]] == [{BENCHMARKS[0]: single.rows[0].score}]
    [merged] = ResultsStore(tmp_path / "merger" / "remote" / "s3" / s3_bucket / "evals").rows("s3")
    same_result(merged, single.rows[0])


def test_a_shard_retried_alone_sends_nothing_new_and_leaves_the_others(model_dir, tmp_path):
    """A shard's retry (the same rows: the same requests) is answered by its request cache; the other shard's
    part is not touched, and the merge is the same."""
    home, one = tmp_path / "home", ["arc_challenge_local"]
    with LatencyEndpoint(0.005, 16) as endpoint:
        first = [run_job(spec(model_dir, home, "retry", endpoint.base_url, k, benchmarks=one)) for k in range(SHARDS)]
        folder = Path(first[0].summary()["shard_parts"][one[0]])
        untouched = {p.name: p.stat().st_mtime_ns for p in folder.glob("0.*")}
        sent = endpoint.stats()["requests"]
        (metrics, records) = bundle(merge(folder, log=lambda _: None).rows[0])
        run_job(spec(model_dir, home, "retry", endpoint.base_url, 1, benchmarks=one))
        assert endpoint.stats()["requests"] == sent
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("0.*")} == untouched
    (again, again_records) = bundle(merge(folder, log=lambda _: None).rows[0])
    assert again_records == records and (again["metrics"], again["ci"]) == (metrics["metrics"], metrics["ci"])
