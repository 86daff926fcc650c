import json
import subprocess
import sys

from tests.factories import record


def evaljobs(*args, env=None):
    return subprocess.run([sys.executable, "-m", "evaljobs.cli", *args], capture_output=True, text=True, env=env)


def test_catalog_lists_every_benchmark_with_its_category():
    out = evaljobs("catalog", "--json")
    assert out.returncode == 0
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["gsm8k"]["category"] == "math" and rows["gsm8k"]["output"] == "generate"
    assert rows["gpqa_diamond"]["needs"] == "gated"
    assert rows["arc_challenge_local"]["source"] == "custom rows"


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
    assert out.stdout.splitlines() == ["rank,model,average,b", "1,m,33.3333,0.5000"]
    target = tmp_path / "board.json"
    assert (
        evaljobs(
            "leaderboard", "--project", "p", "--results-home", str(tmp_path), "--format", "json", "--out", str(target)
        ).returncode
        == 0
    )
    assert json.loads(target.read_text())["rows"][0]["average"] == 33.3333
