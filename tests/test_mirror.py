"""lm-eval's own gsm8k and ifeval tasks run offline from a dataset mirror laid out like the hub repos (the
shared GSM8K and IFEval rows have the hub datasets' fields); the session's vLLM server answers them."""

import json
import shutil
from pathlib import Path

import pytest

from evaljobs.engine.job import run_job
from evaljobs.engine.spec import JobSpec

# The hub's openai/gsm8k dataset card declares its configs and files the same way.
GSM8K_CARD = """---
configs:
- config_name: main
  data_files:
  - split: train
    path: main/train.jsonl
  - split: test
    path: main/test.jsonl
---
"""


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


PUNKT_FILES = ("abbrev_types.txt", "collocations.tab", "sent_starters.txt", "ortho_context.tab")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory, data_root) -> Path:
    """gsm8k: the first 40 test rows as its test split, the last 40 as train (the few-shot examples are then
    never the question asked); IFEval: its 541 rows as the hub file. The real NLTK punkt_tab model cannot be
    fetched here: an untrained one (empty parameter files) stands in for it."""
    root = tmp_path_factory.mktemp("mirror")
    rows = (data_root / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    gsm8k = root / "openai" / "gsm8k"
    (gsm8k / "main").mkdir(parents=True)
    (gsm8k / "main" / "test.jsonl").write_text("\n".join(rows[:40]) + "\n")
    (gsm8k / "main" / "train.jsonl").write_text("\n".join(rows[-40:]) + "\n")
    (gsm8k / "README.md").write_text(GSM8K_CARD)
    (root / "google" / "IFEval").mkdir(parents=True)
    shutil.copy(data_root / "ifeval" / "input_data.jsonl", root / "google" / "IFEval" / "ifeval_input_data.jsonl")
    punkt = root / "nltk_data" / "tokenizers" / "punkt_tab" / "english"
    punkt.mkdir(parents=True)
    for name in PUNKT_FILES:
        (punkt / name).write_text("")
    return root


def job(server, home: Path, mirror: Path, benchmark: str, **settings) -> JobSpec:
    return JobSpec.parse(
        {
            "model": {"base_url": server.base_url, "model": "smollm2", "api_key_secret": "TEAM_LLM_KEY"},
            "benchmarks": [benchmark],
            "settings": settings,
            "datasets": {"mirror": str(mirror)},
            "destination": {"project": "mirror", "results_home": str(home), "wandb": "disabled"},
        }
    )


def test_gsm8k_builtin_task_reads_the_mirror(vllm_server, api_key, mirror, tmp_path):
    result = run_job(job(vllm_server, tmp_path, mirror, "gsm8k", limit=4, max_tokens=96), {"TEAM_LLM_KEY": api_key})
    [row] = result.rows
    assert (row.benchmark, row.metric, row.n_samples) == ("gsm8k", "exact_match,strict-match", 4)
    records = read_jsonl(Path(row.bundle) / "samples.jsonl")
    test = read_jsonl(mirror / "openai/gsm8k/main/test.jsonl")
    train = read_jsonl(mirror / "openai/gsm8k/main/train.jsonl")
    assert [r["doc_id"] for r in records] == [0, 1, 2, 3]
    for record in records:
        asked = test[record["doc_id"]]
        assert record["target"] == asked["answer"]
        messages = json.loads(record["input"])  # a chat request: the shots are earlier turns
        assert messages[-1] == {"role": "user", "content": f"Question: {asked['question']}\nAnswer:"}
        shots = [t for t in train if {"role": "assistant", "content": t["answer"]} in messages]
        assert len(shots) == 5  # lm-eval's 5 few-shot examples, taken from the mirror's train split
    assert row.score == sum(r["score"] for r in records) / 4


def test_ifeval_from_the_mirror_scores_as_lm_eval_does(vllm_server, api_key, mirror, tmp_path):
    """Every accuracy of the job equals what lm-eval's own IFEval scoring gives for the same responses."""
    rows = read_jsonl(mirror / "google/IFEval/ifeval_input_data.jsonl")
    limit = 34  # row 33 is the first whose instructions count sentences (NLTK's punkt)
    assert any("length_constraints:number_sentences" in r["instruction_id_list"] for r in rows[:limit])
    result = run_job(
        job(vllm_server, tmp_path, mirror, "ifeval", limit=limit, max_tokens=48), {"TEAM_LLM_KEY": api_key}
    )
    [row] = result.rows
    assert (row.metric, row.n_samples) == ("prompt_level_strict_acc,none", limit)
    records = read_jsonl(Path(row.bundle) / "samples.jsonl")
    assert sorted(r["doc_id"] for r in records) == list(range(limit))
    from lm_eval.tasks.ifeval.utils import process_results  # imported once NLTK looks in the mirror (the job did)

    scored = [process_results(rows[r["doc_id"]], [r["output"]]) for r in records]
    for level in ("strict", "loose"):
        prompt = [s[f"prompt_level_{level}_acc"] for s in scored]
        instructions = [x for s in scored for x in s[f"inst_level_{level}_acc"]]
        assert row.metrics[f"prompt_level_{level}_acc,none"] == pytest.approx(sum(prompt) / limit)
        assert row.metrics[f"inst_level_{level}_acc,none"] == pytest.approx(sum(instructions) / len(instructions))
    for record in records:  # chat requests: the prompt is the one user message
        assert json.loads(record["input"]) == [{"role": "user", "content": rows[record["doc_id"]]["prompt"]}]


def test_two_mirrors_of_one_dataset_are_never_mixed(data_root, tmp_path):
    """datasets keys a local folder's cache by its layout, not its files: a job reading a mirror gets a cache
    of its own, so a second mirror (or one updated in place) is read as it is."""
    import datasets

    from evaljobs.engine.hub import datasets_cache

    rows = (data_root / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()
    folders = {}
    for name, first in (("a", 0), ("b", 100)):
        folder = tmp_path / name / "openai" / "gsm8k"
        (folder / "main").mkdir(parents=True)
        for split in ("test", "train"):
            (folder / "main" / f"{split}.jsonl").write_text("\n".join(rows[first : first + 5]) + "\n")
        (folder / "README.md").write_text(GSM8K_CARD)
        folders[name] = str(folder)

    def first_question(name: str, cache: str) -> str:
        with datasets_cache(tmp_path / cache):
            return datasets.load_dataset(folders[name], "main", split="test")[0]["question"]

    assert first_question("a", "job-1") == json.loads(rows[0])["question"]
    assert first_question("b", "job-2") == json.loads(rows[100])["question"]
    assert first_question("b", "job-1") == json.loads(rows[0])["question"]  # a shared cache serves mirror a for b
