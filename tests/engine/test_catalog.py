import pytest

from evaljobs.engine import catalog


def test_every_catalog_task_is_known_to_lm_eval():
    from lm_eval.tasks import TaskManager

    known = set(TaskManager().all_tasks)
    hub = {name: e["task"] for name, e in catalog.entries().items() if "task" in e}
    assert len(hub) >= 15
    assert {name: task for name, task in hub.items() if task not in known} == {}


def test_open_llm_leaderboard_and_common_benchmarks_are_listed():
    wanted = {
        "mmlu",
        "mmlu_pro",
        "gsm8k",
        "arc_challenge",
        "arc_easy",
        "hellaswag",
        "ifeval",
        "bbh",
        "gpqa_diamond",
        "musr",
        "math",
        "truthfulqa",
        "winogrande",
        "boolq",
        "piqa",
    }
    assert wanted <= set(catalog.names())


@pytest.mark.parametrize("name", [n for n, e in catalog.entries().items() if "custom" in e])
def test_local_benchmarks_load_over_the_shared_rows(name):
    bench = catalog.load(name)
    assert bench.config["task"] == name
    assert bench.metric in ("acc,none", "acc_norm,none", "exact_match,extract")
    assert 0.0 <= bench.baseline < 1.0


def test_mmlu_subject_file_is_shared_with_parameters(data_root):
    bench = catalog.load("mmlu_college_biology_local")
    assert bench.config["dataset_kwargs"]["data_files"]["test"] == str(data_root / "mmlu/test/college_biology_test.csv")
    assert "about college biology" in bench.config["description"]
    assert bench.fewshot == 5 and bench.baseline == 0.25


def test_unknown_name_suggests_close_ones():
    with pytest.raises(LookupError, match="did you mean arc_challenge"):
        catalog.resolve("arc_chalenge")
    with pytest.raises(LookupError, match="run `evaljobs catalog`"):
        catalog.resolve("zzzzzz")


def test_missing_data_root_is_explained(monkeypatch):
    from evaljobs.engine.errors import SpecError

    monkeypatch.delenv("EVALJOBS_DATA_ROOT")
    with pytest.raises(SpecError, match="uses an unset variable; set it \\(e.g. EVALJOBS_DATA_ROOT\\)"):
        catalog.load("gsm8k_local")


def test_generative_names_take_the_type_of_custom_files_into_account():
    generative = catalog.generative_names()
    assert {"gsm8k", "gsm8k_local", "ifeval", "math"} <= set(generative)
    assert not {"arc_challenge", "arc_challenge_local", "mmlu_marketing_local"} & set(generative)
    assert all(catalog.load(name).output == "generate" for name in generative if name.endswith("_local"))
