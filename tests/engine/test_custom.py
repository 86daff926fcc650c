"""Custom benchmark files over the real shared rows: compiled configs and one clear error per mistake."""

import csv
import json
from pathlib import Path

import pytest
import yaml

from evaljobs.engine import custom
from evaljobs.engine.errors import CustomBenchmarkError


def write(tmp_path: Path, body: dict, name: str = "bench.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(body))
    return path


def mmlu_slice(data_root: Path, tmp_path: Path, answer_as: str) -> Path:
    """The first 10 marketing rows with the answer as a letter or as the answer's text."""
    with (data_root / "mmlu/test/marketing_test.csv").open() as f:
        rows = list(csv.DictReader(f))[:10]
    for row in rows:
        index = int(row["answer"])
        row["answer"] = "ABCD"[index] if answer_as == "letter" else row[f"choice{index}"]
    out = tmp_path / f"marketing_{answer_as}.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return out


ARC = {
    "name": "arc_local",
    "type": "multiple_choice",
    "prompt": "{{query}}\nAnswer:",
    "choices": "choices",
    "answer": "gold",
    "answer_format": "index",
}
GSM8K = {
    "name": "gsm_local",
    "type": "generate",
    "prompt": "Question: {{question}}\nAnswer:",
    "answer": "{{answer.split('####')[-1]}}",
    "extract": "last_number",
    "until": ["\n\n"],
    "max_tokens": 64,
}


def test_multiple_choice_index_answers(data_root, tmp_path):
    bench = custom.load(write(tmp_path, {**ARC, "data": str(data_root / "arc/arc_challenge.jsonl")}))
    config = bench.task_config()
    assert config["output_type"] == "multiple_choice"
    assert config["dataset_path"] == "json"
    assert config["dataset_kwargs"]["data_files"]["test"] == str(data_root / "arc/arc_challenge.jsonl")
    assert bench.metric == "acc,none" and bench.baseline == 0.25


def test_letter_and_text_answers_compile_to_the_same_targets(data_root, tmp_path):
    """Scoring a row must not depend on how its answer is written: all three give lm-eval the same index."""
    index_rows = list(csv.DictReader((data_root / "mmlu/test/marketing_test.csv").open()))[:10]
    body = {
        "name": "mk",
        "type": "multiple_choice",
        "prompt": "{{question}}\nAnswer:",
        "choices": ["choice0", "choice1", "choice2", "choice3"],
        "answer": "answer",
    }
    for answer_as in ("letter", "text"):
        data = mmlu_slice(data_root, tmp_path, answer_as)
        bench = custom.load(
            write(tmp_path, {**body, "data": str(data), "answer_format": answer_as}, f"{answer_as}.yaml")
        )
        rows = list(csv.DictReader(data.open()))
        targets = [bench.task_config()["doc_to_target"](row) for row in rows]
        assert targets == [int(r["answer"]) for r in index_rows]


def test_generate_compiles_extraction_and_stops(data_root, tmp_path):
    bench = custom.load(write(tmp_path, {**GSM8K, "data": str(data_root / "gsm8k/test.jsonl")}))
    config = bench.task_config()
    assert config["output_type"] == "generate_until"
    assert config["generation_kwargs"]["until"] == ["\n\n"] and config["generation_kwargs"]["max_gen_toks"] == 64
    assert config["filter_list"][0]["name"] == "extract"
    assert bench.metric == "exact_match,extract" and bench.baseline == 0.0
    first = json.loads((data_root / "gsm8k/test.jsonl").open().readline())
    assert config["doc_to_target"](first) == "18"


def test_relative_data_path_and_variables(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("ROWS", str(data_root / "arc"))
    bench = custom.load(write(tmp_path, {**ARC, "data": "${ROWS}/arc_challenge.jsonl"}))
    assert bench.data == data_root / "arc/arc_challenge.jsonl"


@pytest.mark.parametrize(
    ("change", "key", "message"),
    [
        (
            {"prompt": "{{question}}"},
            "prompt",
            "row 1: 'question' is undefined; the row's fields are: choices, query, gold",
        ),
        ({"choices": "options"}, "choices", "row 1 has no field 'options'"),
        ({"choices": "query"}, "choices", "field 'query' must hold a list"),
        ({"answer": "label"}, "answer", "'label' is undefined"),
        ({"answer_format": "letter"}, "answer", "row 1: '2' is not a letter A..D"),
        ({"prompt": "{{query"}, "prompt", "bad template"),
        ({"data": "missing.jsonl"}, "data", "does not exist (paths are relative to the YAML file)"),
        ({"data": "${NOT_SET_ANYWHERE}/rows.jsonl"}, "data", "uses an unset variable"),
        ({"data": "rows.parquet"}, "data", "use a .jsonl, .json or .csv file"),
        ({"type": "ranking"}, "type", "Input should be 'multiple_choice' or 'generate'"),
        ({"answers": "gold"}, "answers", "unknown key"),
        ({"name": "../../etc"}, "name", "String should match pattern"),
    ],
)
def test_each_mistake_names_its_key(data_root, tmp_path, change, key, message):
    path = write(tmp_path, {**ARC, "data": str(data_root / "arc/arc_challenge.jsonl"), **change})
    with pytest.raises(CustomBenchmarkError) as info:
        custom.load(path)
    assert info.value.key == key
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "has no rows"),
        (b"\xff\xfe\x00bad", "is not UTF-8 text"),
        (b'{"query": "q", "choices": ["a", "b"]}\n', "'gold' is undefined"),
        (b"not json\n", "cannot be parsed"),
    ],
)
def test_bad_data_files(tmp_path, content, message):
    (tmp_path / "rows.jsonl").write_bytes(content)
    with pytest.raises(CustomBenchmarkError) as info:
        custom.load(write(tmp_path, {**ARC, "data": "rows.jsonl"}))
    assert message in str(info.value)


def test_answer_missing_in_a_later_row_is_found(data_root, tmp_path):
    rows = [json.loads(line) for line in (data_root / "arc/arc_challenge.jsonl").open().readlines()[:5]]
    del rows[3]["gold"]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CustomBenchmarkError, match="row 4: 'gold' is undefined"):
        custom.load(write(tmp_path, {**ARC, "data": "rows.jsonl"}))


@pytest.mark.parametrize(
    ("extract", "message"), [("(unclosed", "bad regular expression"), ("no groups", "exactly one group")]
)
def test_bad_extract(data_root, tmp_path, extract, message):
    with pytest.raises(CustomBenchmarkError, match=message):
        custom.load(write(tmp_path, {**GSM8K, "data": str(data_root / "gsm8k/test.jsonl"), "extract": extract}))


def test_not_a_mapping_and_missing_file(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(CustomBenchmarkError, match="must be a mapping"):
        custom.load(tmp_path / "list.yaml")
    with pytest.raises(CustomBenchmarkError, match="no such file"):
        custom.load(tmp_path / "absent.yaml")


def test_a_declared_cluster_reaches_the_records_and_clusters_the_ci(data_root, tmp_path, model_dir):
    """A custom benchmark's ``cluster`` key: refused when a row lacks the field; otherwise lm-eval (against the
    latency endpoint) writes each example's cluster into its record and the score's CI is cluster-robust."""
    from evaljobs.engine import catalog, stats
    from evaljobs.engine.harness import Endpoint, Harness
    from evaljobs.engine.spec import Settings
    from tests.engine.test_stats import cr1
    from tests.latency_endpoint import LatencyEndpoint

    lines = (data_root / "arc/arc_challenge.jsonl").read_text(encoding="utf-8").splitlines()[:8]
    rows = tmp_path / "rows.jsonl"  # real questions; the gold answers rotate so that the endpoint gets some right
    rows.write_text(
        "".join(json.dumps(json.loads(x) | {"passage": i // 2, "gold": i % 4}) + "\n" for i, x in enumerate(lines))
    )
    with pytest.raises(CustomBenchmarkError) as info:
        custom.load(write(tmp_path, {**ARC, "data": str(data_root / "arc/arc_challenge.jsonl"), "cluster": "passage"}))
    assert info.value.key == "cluster" and "row 1 has no field 'passage'" in str(info.value)
    benchmark = catalog.load(str(write(tmp_path, {**ARC, "data": str(rows), "cluster": "passage"})))
    assert benchmark.cluster == "passage"
    with LatencyEndpoint(0.01, 16) as endpoint:
        served = Endpoint(endpoint.base_url, "latency-model", "completions", str(model_dir))
        run = Harness(served, Settings(limit=8, max_tokens=16), tmp_path / "cache").run(benchmark)
    assert sorted((r["doc_id"], r["cluster"]) for r in run.samples) == [(i, i // 2) for i in range(8)]
    estimate = stats.score_ci(run.samples, run.score)
    scores = [r["score"] for r in run.samples]
    assert 0 < sum(scores) < 8, scores  # the endpoint's deterministic answers: some right, some wrong
    assert (estimate.method, estimate.n, estimate.clusters) == ("cluster-robust t", 8, 4)
    assert estimate.se == pytest.approx(cr1(scores, [r["cluster"] for r in run.samples])[0], rel=1e-9)
