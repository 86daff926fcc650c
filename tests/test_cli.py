import json
import subprocess
import sys

from tests.engine.test_catalog import INSPECT_GRADED, ISSUE_GATED, ISSUE_JUDGE
from tests.factories import record


def evaljobs(*args, env=None):
    return subprocess.run([sys.executable, "-m", "evaljobs.cli", *args], capture_output=True, text=True, env=env)


def catalog_rows(*flags):
    out = evaljobs("catalog", "--json", *flags)
    assert out.returncode == 0, out.stderr
    return {r["name"]: r for r in json.loads(out.stdout)}


def test_catalog_lists_every_benchmark_with_its_category_backends_and_flags():
    rows = catalog_rows()
    assert len(rows) == 112
    assert rows["gsm8k"]["category"] == "math" and rows["gsm8k"]["output"] == "generate"
    assert rows["gsm8k"]["backends"] == ["lm_eval", "inspect"] and rows["gsm8k"]["runnable"] is True
    assert rows["gpqa_diamond"]["gated"] is True and rows["gpqa_diamond"]["lm_eval"] == "leaderboard_gpqa_diamond"
    assert rows["arc_challenge_local"]["lm_eval"] == "custom rows"
    assert rows["mmlu_5_shot"]["aliases"] == ["mmlu"]
    assert rows["hle"]["runnable"] is True and rows["hle"]["backends"] == ["inspect"]  # the [inspect] extra is in
    assert rows["docvqa"]["runnable"] is False and "takes image input" in rows["docvqa"]["unavailable"]


def test_catalog_filters_select_the_right_sets():
    assert set(catalog_rows("--needs-judge")) == ISSUE_JUDGE | INSPECT_GRADED
    assert set(catalog_rows("--gated")) == ISSUE_GATED | {"gpqa_diamond"}
    assert len(catalog_rows("--no-judge")) == 97 and len(catalog_rows("--not-gated")) == 106
    assert set(catalog_rows("--category", "code")) == {"bfcl", "infinite_bench_code_debug", "infinite_bench_code_run"}
    assert set(catalog_rows("--category", "safety", "--backend", "lm_eval")) == {
        "bbq",
        "truthfulqa",
        "wmdp_bio",
        "wmdp_chem",
        "wmdp_cyber",
    }
    assert set(catalog_rows("--category", "multimodal", "--runnable")) == set()
    assert set(catalog_rows("--category", "knowledge", "--gated", "--backend", "inspect")) == {
        "gpqa_diamond",
        "hle",
        "lingoly",
        "lingoly_too",
    }
    assert len(catalog_rows("--backend", "lm_eval")) == 53 and len(catalog_rows("--backend", "inspect")) == 104
    runnable = catalog_rows("--runnable")
    assert len(runnable) == 102 and all(r["runnable"] for r in runnable.values())  # all but 9 image ones and ahb


def test_catalog_table_ends_with_counts_per_category():
    out = evaljobs("catalog", "--category", "long_context")
    assert out.returncode == 0
    lines = out.stdout.splitlines()
    assert lines[0].split()[:5] == ["name", "category", "backends", "output", "needs"]
    assert lines[-1] == "6 benchmarks: long_context 6"
    assert any(line.startswith("niah ") and " inspect " in line for line in lines)
    images = evaljobs("catalog", "--category", "multimodal").stdout.splitlines()
    assert any(line.startswith("docvqa ") and "not runnable here" in line for line in images)
    bad = evaljobs("catalog", "--category", "vision")
    assert bad.returncode == 2 and "unknown category 'vision'; use one of knowledge, reasoning" in bad.stderr


def test_bad_job_exits_2_with_every_problem_and_no_traceback(tmp_path):
    out = evaljobs(
        "run",
        "--checkpoint",
        str(tmp_path),
        "--base-url",
        "http://x/v1",
        "--model",
        "m",
        "--benchmarks",
        "gsm8kk",
        "--limit",
        "-1",
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    assert lines[0] == "evaljobs: invalid evaluation job:"
    assert any(line.startswith("  - model: give either checkpoint") for line in lines)
    assert any("unknown benchmark 'gsm8kk'; did you mean gsm8k" in line for line in lines)
    assert "  - settings.limit: Input should be greater than or equal to 0 (got -1)" in lines


def test_spec_file_and_flags_merge(tmp_path):
    from evaljobs.cli import _parser, job_spec_from_args

    spec = tmp_path / "job.yaml"
    spec.write_text("model: {checkpoint: /m}\nbenchmarks: [gsm8k]\nsettings: {limit: 5, seed: 7}\n")
    args = _parser().parse_args(["run", "--spec", str(spec), "--limit", "9", "--benchmarks", "arc_easy, gsm8k"])
    data = job_spec_from_args(args)
    assert data["settings"] == {"limit": 9, "seed": 7}
    assert data["benchmarks"] == ["arc_easy", "gsm8k"]


def test_leaderboard_formats(tmp_path):
    record(tmp_path, "m", "b", score=0.5, baseline=0.25)
    out = evaljobs("leaderboard", "--project", "p", "--results-home", str(tmp_path), "--format", "csv")
    header, line = out.stdout.splitlines()
    assert header == (
        "rank,model,variant,average,benchmarks,evaluated_at,b,average_ci_low,average_ci_high,b_ci_low,b_ci_high,tier"
    )
    # evaluated_at: an ISO time; no bundle, no CIs; a model alone is its own tier
    assert line.startswith("1,m,,33.3333,1,20") and line.endswith(",0.5000,-,-,-,-,1")
    target = tmp_path / "board.json"
    assert (
        evaljobs(
            "leaderboard", "--project", "p", "--results-home", str(tmp_path), "--format", "json", "--out", str(target)
        ).returncode
        == 0
    )
    assert json.loads(target.read_text())["rows"][0]["average"] == 33.3333


def test_report_and_html_leaderboard(tmp_path):
    record(tmp_path, "m", "b", score=0.5, baseline=0.25)
    record(tmp_path, "n", "b", score=0.75, baseline=0.25)
    out = evaljobs("report", "--project", "p", "--results-home", str(tmp_path), "--out", str(tmp_path / "r"))
    assert out.returncode == 0 and out.stdout.strip() == f"report: {tmp_path / 'r' / 'index.html'}"
    assert sorted(p.name for p in (tmp_path / "r" / "charts").iterdir()) == ["_average.png", "_heatmap.png", "b.png"]
    page = evaljobs("leaderboard", "--project", "p", "--results-home", str(tmp_path), "--format", "html").stdout
    assert page.startswith("<!DOCTYPE html>") and page.index(">n<") < page.index(">m<")  # n ranks first
    missing = evaljobs("report", "--project", "none", "--results-home", str(tmp_path), "--out", str(tmp_path / "x"))
    assert missing.returncode == 2 and "project: no results for 'none'" in missing.stderr


def test_package_model_offline_checks_the_folder_first(tmp_path, model_dir):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"HOME": str(tmp_path)}
    home = tmp_path / "home"
    bad = evaljobs("package-model", str(tmp_path), "--name", "x", "--project", "t/p", "--results-home", str(home))
    assert bad.returncode == 2 and "config.json" in bad.stderr and not (home / "wandb").exists()
    out = evaljobs(
        "package-model", str(model_dir), "--name", "smollm2", "--project", "team/models", "--results-home", str(home),
        env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"logged {model_dir} as the W&B model artifact team/models/smollm2:latest"
    assert "offline" in out.stdout and len(list((home / "wandb").glob("offline-run-*"))) == 1


def test_run_flags_for_wandb_and_publishing():
    from evaljobs.cli import _parser, job_spec_from_args

    args = _parser().parse_args(
        ["run", "--checkpoint", "team/models/smollm2:v3", "--benchmarks", "gsm8k", "--wandb", "offline"]
        + ["--wandb-host", "https://wandb.example.com", "--no-publish-leaderboard"]
    )
    data = job_spec_from_args(args)
    assert data["destination"] == {
        "wandb": "offline",
        "wandb_host": "https://wandb.example.com",
        "publish_leaderboard": False,
    }
    assert data["model"] == {"checkpoint": "team/models/smollm2:v3"}
