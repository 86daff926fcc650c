"""W&B tracking with the real wandb client in offline mode, read back from its ``.wandb`` record log."""

from __future__ import annotations

import csv
import json
import os
import secrets
from dataclasses import replace
from itertools import cycle, islice
from pathlib import Path
from types import SimpleNamespace

import pytest

from evaljobs.engine import leaderboard, tracking
from evaljobs.engine.errors import PreflightError
from evaljobs.engine.modelprep import check_folder
from evaljobs.engine.results import ResultRow
from evaljobs.engine.spec import Settings
from evaljobs.engine.tracking import TrackedRun, WandbTarget
from tests.wandb_records import RunLog, read_run

MMLU_SUBJECTS = ("marketing", "college_biology")


@pytest.fixture(autouse=True)
def fake_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A fresh home folder: wandb must write nothing there, nor leave its variables set."""
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "WANDB_DIR", "WANDB_SERVICE"):
        monkeypatch.delenv(name, raising=False)
    for name in tracking.ENV_DIRS:
        monkeypatch.delenv(name, raising=False)
    yield home
    assert list(home.rglob("*")) == []
    assert [k for k in (*tracking.ENV_DIRS, "WANDB_SERVICE") if k in os.environ] == []


@pytest.fixture
def results_home(tmp_path: Path) -> Path:
    return tmp_path / "results"


def mmlu_samples(data_root: Path, subject: str, n: int) -> list[dict]:
    """Multiple-choice examples built from real MMLU rows (input, choices, target as lm-eval records them)."""
    with (data_root / "mmlu" / "test" / f"{subject}_test.csv").open(encoding="utf-8") as f:
        rows = list(islice(csv.DictReader(f), n))
    samples = []
    for doc_id, row in enumerate(rows):
        options = "\n".join(f"{letter}. {row[f'choice{i}']}" for i, letter in enumerate("ABCD"))
        likelihoods = [-1.0 - ((doc_id + i) % 4) * 0.25 for i in range(4)]
        output = likelihoods.index(max(likelihoods))
        samples.append(
            {
                "task": f"mmlu_{subject}_local",
                "doc_id": doc_id,
                "input": f"{row['question']}\n{options}\nAnswer:",
                "target": int(row["answer"]),
                "score": float(output == int(row["answer"])),
                "choices": [" A", " B", " C", " D"],
                "loglikelihoods": likelihoods,
                "output": output,
            }
        )
    return samples


def gsm8k_samples(data_root: Path, n: int) -> list[dict]:
    """``n`` generation examples from the real GSM8K rows (cycled when ``n`` exceeds them)."""
    with (data_root / "gsm8k" / "test.jsonl").open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    samples = []
    for doc_id, row in enumerate(islice(cycle(rows), n)):
        target = row["answer"].rsplit("####", 1)[-1].strip()
        samples.append(
            {
                "task": "gsm8k_local",
                "doc_id": doc_id,
                "input": f"Question: {row['question']}\nAnswer:",
                "target": target,
                "score": float(doc_id % 7 == 0),
                "output": target if doc_id % 7 == 0 else "42",
                "raw_output": f" The answer is {target if doc_id % 7 == 0 else 42}.",
            }
        )
    return samples


def write_bundle(folder: Path, samples: list[dict], **overrides) -> Path:
    """A result bundle shaped like the ones ``job._record`` writes."""
    mc = "choices" in samples[0]
    name = samples[0]["task"]
    score = sum(s["score"] for s in samples) / len(samples)
    metric = "acc,none" if mc else "exact_match,flexible-extract"
    stderr = metric.replace(",", "_stderr,")
    metrics = {
        "job_id": "8c2ee0789f7f",
        "project": "team/evals",
        "model": {"checkpoint": "/models/smollm2-135m-instruct", "name": "smollm2-135m-instruct"},
        "benchmark": {
            "name": name,
            "category": "knowledge" if mc else "math",
            "output": "multiple_choice" if mc else "generate_until",
            "metric": metric,
            "baseline": 0.25 if mc else 0.0,
            "task": None,
            "custom": f"/benchmarks/{name}.yaml",
        },
        "score": score,
        "metrics": {metric: score, stderr: 0.0714995069016527} | ({"acc_norm,none": 0.3} if mc else {}),
        "subscores": {"mmlu_marketing_local": score} if mc else {},
        "n_samples": len(samples),
        "settings": Settings(limit=len(samples)).model_dump(),
        "settings_hash": Settings(limit=len(samples)).score_hash(),
        "resources": {"dtype": "auto", "gpus": 0, "max_model_len": 2048, "startup_timeout": 900.0},
        "timing": {
            "seconds": 12.5,
            "requests_answered_by_server": 160,
            "requests_per_second": 12.8,
            "tokens_in": 51234,
            "tokens_out": None,
        },
        "versions": {"evaljobs": "0.1.0", "lm_eval": "0.4.13", "vllm": "0.32.0"},
        "harness": {
            "lm_eval_version": "0.4.13",
            "num_fewshot": {name: 0},
            "task_hashes": {},
            "task_versions": {name: 1.0},
        },
        "server": {"args": ["--model", "/models/smollm2-135m-instruct", "--max-model-len", "2048"]},
        "hardware": {"gpus": 0, "cpus": 8, "platform": "Linux-6.8", "machine": "x86_64"},
    } | overrides
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    with (folder / "samples.jsonl").open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
    return folder


def table_rows(run: TrackedRun, key: str) -> list[dict]:
    """The rows of the Table logged under ``key``, from its file in the run folder."""
    log = read_run(run.path)
    (entry,) = [row for row in log.history if f"{key}/path" in row]
    table = json.loads((run.path / "files" / entry[f"{key}/path"]).read_text(encoding="utf-8"))
    return [dict(zip(table["columns"], row, strict=True)) for row in table["data"]]


def run_folders(results_home: Path, run_id: str) -> list[Path]:
    return sorted(p for p in (results_home / "wandb").glob(f"*run-*-{run_id}*") if p.is_dir())


def recorded(run: TrackedRun, log: RunLog, state: str = "finished", job_type: str = "evaluation"):
    """A ``wandb.apis.public.Run``-shaped object of what the run logged."""
    return SimpleNamespace(
        id=run.id,
        name=log.run["name"],
        group=log.run["group"],
        job_type=job_type,
        config=log.config,
        summary=log.summary,
        created_at="2026-01-02T03:04:05Z",
        state=state,
    )


def expected_row(bundle: Path) -> ResultRow:
    """The row ``job._record`` stores locally for this bundle."""
    m = json.loads((bundle / "metrics.json").read_text())
    return ResultRow(
        project=m["project"],
        model=m["model"]["name"],
        benchmark=m["benchmark"]["name"],
        settings_hash=m["settings_hash"],
        job_id=m["job_id"],
        category=m["benchmark"]["category"],
        metric=m["benchmark"]["metric"],
        score=m["score"],
        baseline=m["benchmark"]["baseline"],
        n_samples=m["n_samples"],
        metrics=m["metrics"],
        bundle="",
        settings={k: v for k, v in m["settings"].items() if k in Settings.SCORE_FIELDS},
        subscores=m["subscores"],
    )


def test_evaluation_run_holds_config_summary_every_example_and_the_bundle(
    tmp_path: Path, results_home: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch
):
    key, env_key = "canary-" + secrets.token_hex(12), "canary-" + secrets.token_hex(12)
    monkeypatch.setenv("WANDB_API_KEY", env_key)  # what an `evaljobs` child process receives
    samples = mmlu_samples(data_root, "marketing", 40)
    server = {"args": ["--model", "/m", "--api-key", key, f"--hf-token={key}", "--max-tokens", "64"]}
    bundle = write_bundle(tmp_path / "bundle", samples, server=server)
    target = WandbTarget(api_key=key, host="https://wandb.example.com", mode="offline")

    run = tracking.log_evaluation(bundle, results_home, target, model_artifact="team/models/smollm2:v3")

    metrics = json.loads((bundle / "metrics.json").read_text())
    assert run.id == tracking.run_id(
        "team/evals", "smollm2-135m-instruct", "mmlu_marketing_local", metrics["settings_hash"]
    )
    assert (run.project, run.entity, run.offline, run.url) == ("evals", "team", True, None)
    assert run.path.parent == results_home / "wandb" and run.path.name.startswith("offline-run-")
    assert tracking.sync_command(run) == f"wandb sync {run.path}"
    log = read_run(run.path)
    assert log.run == {
        "id": run.id,
        "project": "evals",
        "entity": "team",
        "group": "8c2ee0789f7f",
        "job_type": "evaluation",
        "name": "smollm2-135m-instruct · mmlu_marketing_local",
    }
    assert log.exit_code == 0
    assert log.config["model"] == metrics["model"] | {"artifact": "team/models/smollm2:v3"}
    for section in ("benchmark", "harness", "settings", "resources", "versions", "hardware"):
        assert log.config[section] == metrics[section], section
    assert log.config["settings_hash"] == metrics["settings_hash"]
    assert log.config["server"] == {"args": ["--model", "/m", "--max-tokens", "64"]}
    assert {k: log.summary[k] for k in ("acc", "acc_stderr", "acc_norm", "score", "n_samples")} == {
        "acc": metrics["metrics"]["acc,none"],
        "acc_stderr": metrics["metrics"]["acc_stderr,none"],
        "acc_norm": 0.3,
        "score": metrics["score"],
        "n_samples": 40,
    }
    assert (log.summary["wall_seconds"], log.summary["requests_per_second"], log.summary["tokens_in"]) == (
        12.5,
        12.8,
        51234,
    )
    assert "tokens_out" not in log.summary  # null in the bundle
    assert log.summary["subscores"] == metrics["subscores"]

    rows = table_rows(run, "samples")
    assert len(rows) == 40
    for row, sample in zip(rows, samples, strict=True):
        assert row["doc_id"] == sample["doc_id"] and row["input"] == sample["input"]
        assert (row["target"], row["output"], row["score"]) == (sample["target"], sample["output"], sample["score"])
        assert json.loads(row["choices"]) == sample["choices"]
        assert json.loads(row["loglikelihoods"]) == sample["loglikelihoods"]

    results = [a for a in log.artifacts if a["type"] == "evaluation-results"]
    assert [a["name"] for a in results] == [tracking.results_artifact_name(run.id)]
    entries = results[0]["entries"]
    assert set(entries) == {"metrics.json", "samples.jsonl"}
    assert entries["samples.jsonl"]["size"] == (bundle / "samples.jsonl").stat().st_size
    logged = json.loads(Path(entries["metrics.json"]["local_path"]).read_text())
    assert logged == metrics | {"server": {"args": ["--model", "/m", "--max-tokens", "64"]}}  # scrubbed copy
    assert log.used_artifacts == []  # wandb refuses use_artifact offline: the reference is in the config

    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(bundle)]
    assert any(p.suffix == ".wandb" for p in written)
    for path in written:
        data = path.read_bytes()
        assert key.encode() not in data and env_key.encode() not in data, path


def test_all_examples_are_logged_in_tables_of_at_most_10000_rows(tmp_path: Path, results_home: Path, data_root: Path):
    samples = gsm8k_samples(data_root, 25_001)
    bundle = write_bundle(tmp_path / "bundle", samples)

    run = tracking.log_evaluation(bundle, results_home, WandbTarget())

    log = read_run(run.path)
    keys = sorted({k.removesuffix("/path") for row in log.history for k in row if k.endswith("/path")})
    assert keys == ["samples/part-001", "samples/part-002", "samples/part-003"]
    parts = [table_rows(run, key) for key in keys]
    assert [len(p) for p in parts] == [10_000, 10_000, 5_001]
    rows = [row for part in parts for row in part]
    assert [r["doc_id"] for r in rows] == list(range(25_001))
    assert rows[-1]["raw_output"] == samples[-1]["raw_output"] and rows[-1]["target"] == samples[-1]["target"]
    assert "choices" not in rows[0]
    assert log.summary["exact_match,flexible-extract"] == json.loads((bundle / "metrics.json").read_text())["score"]
    assert log.summary["exact_match_stderr,flexible-extract"] == 0.0714995069016527


def test_a_rerun_resumes_the_same_run_id_and_leaves_one_run_folder(tmp_path: Path, results_home: Path, data_root: Path):
    bundle = write_bundle(tmp_path / "bundle", mmlu_samples(data_root, "marketing", 5))

    runs = [tracking.log_evaluation(bundle, results_home, WandbTarget()) for _ in range(3)]

    assert len({r.id for r in runs}) == 1
    assert run_folders(results_home, runs[0].id) == [runs[-1].path]
    assert (results_home / "wandb" / "latest-run").resolve() == runs[-1].path
    other = write_bundle(tmp_path / "other", mmlu_samples(data_root, "college_biology", 5))
    second = tracking.log_evaluation(other, results_home, WandbTarget())
    assert second.id != runs[0].id
    assert run_folders(results_home, runs[0].id) == [runs[-1].path]  # another run's folders stay
    elsewhere = tracking.log_evaluation(other, tmp_path / "results-2", WandbTarget())
    assert elsewhere.path.parent == tmp_path / "results-2" / "wandb"
    # each call has its own wandb service, whose log lands in that call's results home
    assert list((tmp_path / "results-2" / "wandb" / "cache").rglob("core-debug-*.log"))


def test_calls_inside_a_session_share_its_one_wandb_service(tmp_path: Path, results_home: Path, data_root: Path):
    bundles = [write_bundle(tmp_path / s, mmlu_samples(data_root, s, 5)) for s in MMLU_SUBJECTS]

    with tracking.session(results_home / "wandb"):
        assert os.environ["WANDB_CONFIG_DIR"] == str(results_home / "wandb" / "config")
        runs = [tracking.log_evaluation(b, results_home, WandbTarget()) for b in bundles]
        board = leaderboard.build("p", [])
        tracking.log_leaderboard(board.as_dict(), results_home, WandbTarget())

    assert [read_run(r.path).summary["n_samples"] for r in runs] == [5, 5]
    # one service for the three runs: one core log (each session starts its own, see the test above)
    assert len(list((results_home / "wandb" / "cache").rglob("core-debug-*.log"))) == 1


def test_rows_from_runs_rebuild_the_results_of_finished_evaluation_runs(
    tmp_path: Path, results_home: Path, data_root: Path
):
    bundles = [
        write_bundle(tmp_path / subject, mmlu_samples(data_root, subject, 8), project="evals")
        for subject in MMLU_SUBJECTS
    ]
    runs = [tracking.log_evaluation(b, results_home, WandbTarget()) for b in bundles]
    logs = [read_run(r.path) for r in runs]
    board = leaderboard.build("evals", [expected_row(bundles[0])])
    board_run = tracking.log_leaderboard(board.as_dict(), results_home, WandbTarget())
    stripped = replace(logs[1], summary={k: v for k, v in logs[1].summary.items() if k != "score"})

    got = tracking.rows_from_runs(
        "evals",
        [
            recorded(runs[1], logs[1]),
            recorded(runs[0], logs[0]),
            recorded(board_run, read_run(board_run.path), job_type="leaderboard"),
            recorded(runs[0], logs[0], state="running"),
            recorded(runs[0], logs[0], state="crashed"),
            recorded(runs[1], stripped),
        ],
    )

    assert [r.benchmark for r in got] == ["mmlu_marketing_local", "mmlu_college_biology_local"]  # oldest first
    for row, bundle, run, log in zip(got, bundles, runs, logs, strict=True):
        assert replace(row, bundle="", recorded_at="") == expected_row(bundle)
        assert row.bundle == f"evals/{tracking.results_artifact_name(run.id)}:latest"
        assert row.recorded_at == log.summary["recorded_at"]


def test_leaderboard_run_holds_the_board_as_a_table_and_charts(tmp_path: Path, results_home: Path, data_root: Path):
    bundles = [write_bundle(tmp_path / s, mmlu_samples(data_root, s, 6), project="team/evals") for s in MMLU_SUBJECTS]
    rows = [replace(expected_row(b), bundle=str(b)) for b in bundles]  # local bundles: with CIs
    rows.append(replace(rows[0], model="other-model", score=0.9, recorded_at="2026-01-01T00:00:00+00:00"))
    board = leaderboard.build("team/evals", rows).as_dict()

    run = tracking.log_leaderboard(board, results_home, WandbTarget())
    again = tracking.log_leaderboard(board, results_home, WandbTarget())

    assert again.id == run.id and run.id.startswith("leaderboard-")
    assert run_folders(results_home, run.id) == [again.path]
    log = read_run(again.path)
    assert (log.run["job_type"], log.run["project"], log.run["entity"]) == ("leaderboard", "evals", "team")
    expected = [
        {k: r[k] for k in ("rank", "tier", "model", "variant", "average", "benchmarks", "evaluated_at")}
        | {c: r["scores"].get(c) for c in board["columns"]}
        | dict(zip(("average_ci_low", "average_ci_high"), r["average_ci"] or (None, None), strict=True))
        | {
            f"{c}_ci_{end}": (r["ci"].get(c) or (None, None))[i]
            for c in board["columns"]
            for i, end in enumerate(("low", "high"))
        }  # fmt: skip
        for r in board["rows"]
    ]
    assert table_rows(again, "leaderboard") == expected
    assert sum(v is not None for e in expected for k, v in e.items() if "_ci_" in k) >= 2  # the CIs made it
    assert expected[1]["mmlu_college_biology_local"] is None  # other-model has one benchmark only
    charts = log.internal["visualize"]
    assert set(charts) == {"charts/average", *(f"charts/{c}" for c in board["columns"])}
    assert {c["panel_config"]["panelDefId"] for c in charts.values()} == {"wandb/bar/v0"}
    labels = [f"{r['model']} [{r['variant']}]" if r["variant"] else r["model"] for r in board["rows"]]
    bars = table_rows(again, "charts/average_table")
    assert [(b["model"], b["score"]) for b in bars] == [
        (label, r["average"]) for label, r in zip(labels, board["rows"], strict=True)
    ]
    assert len(table_rows(again, "charts/mmlu_college_biology_local_table")) == 1  # bars only where scored


def test_package_model_refuses_a_folder_vllm_cannot_load(tmp_path: Path, results_home: Path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')

    with pytest.raises(PreflightError, match="cannot be loaded by vLLM") as err:
        tracking.package_model(folder, "broken", "evals", WandbTarget(), results_home)
    assert "safetensors" in str(err.value) and "tokenizer" in str(err.value)
    assert not results_home.exists()


def test_package_model_logs_a_prepared_folder_offline(model_dir: Path, results_home: Path):
    with pytest.raises(PreflightError, match="letters, digits"):
        tracking.package_model(model_dir, "bad/name", "evals", WandbTarget(), results_home)

    ref = tracking.package_model(model_dir, "smollm2", "evals", WandbTarget(entity="team"), results_home)

    assert ref == "team/evals/smollm2:latest"
    (folder,) = (results_home / "wandb").glob("offline-run-*")
    log = read_run(folder)
    assert log.run["job_type"] == "package-model"
    (artifact,) = log.artifacts
    checked = check_folder(model_dir)
    assert (artifact["type"], artifact["name"]) == ("model", "smollm2")
    assert artifact["metadata"] == {
        "architecture": checked.architecture,
        "weight_bytes": checked.weight_bytes,
        "max_position_embeddings": checked.max_position_embeddings,
        "has_chat_template": checked.has_chat_template,
    }
    files = {p.name: p for p in model_dir.iterdir() if p.is_file()}
    assert set(artifact["entries"]) == set(files)
    weights = artifact["entries"]["model.safetensors"]
    assert weights["size"] == files["model.safetensors"].stat().st_size
    assert Path(weights["local_path"]) == files["model.safetensors"]  # referenced, not copied
    assert sum(p.stat().st_size for p in results_home.rglob("*") if p.is_file()) < 10_000_000


@pytest.mark.parametrize("target", [WandbTarget(), WandbTarget(mode="offline"), WandbTarget("k", mode="disabled")])
def test_download_model_without_w_and_b_access_says_what_is_needed(tmp_path: Path, target: WandbTarget):
    with pytest.raises(PreflightError, match="needs a W&B API key") as err:
        tracking.download_model("team/models/smollm2:v3", target, tmp_path / "artifacts")
    assert "team/models/smollm2:v3" in str(err.value) and "and give the folder" in str(err.value)
    assert not (tmp_path / "artifacts").exists()


def test_credentials_are_recognised_by_whole_words():
    assert [tracking.is_secret_name(n) for n in ("api_key", "apiKey", "HF_TOKEN", "--api-key", "db-password")] == [
        True
    ] * 5
    assert [tracking.is_secret_name(n) for n in ("max_tokens", "tokens_in", "task_hashes", "monkey")] == [False] * 4
    assert tracking.scrub({"a": {"token": 1, "b": [1, {"secret_x": 2}]}, "args": ["-x", "--token", "v", "1"]}) == {
        "a": {"b": [1, {}]},
        "args": ["-x", "1"],
    }


def test_target_is_offline_without_a_key_and_never_shows_the_key():
    assert WandbTarget().offline and WandbTarget("k", mode="offline").offline
    assert not WandbTarget("k").offline and not WandbTarget(mode="online").offline
    assert "k3y" not in repr(WandbTarget("k3y"))
