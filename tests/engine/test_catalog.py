import pytest

from evaljobs.engine import catalog

# The reference product's text benchmarks, by category, as issue 6 lists them.
ISSUE_TEXT_BENCHMARKS = {
    "knowledge": "boolq gpqa_diamond hle lingoly lingoly_too mmlu_0_shot mmlu_5_shot mmlu_pro onet_m6 paws "
    "sevenllm_mcq_en sevenllm_mcq_zh sevenllm_qa_en sevenllm_qa_zh simpleqa simpleqa_verified worldsense",
    "reasoning": "agie_aqua_rat agie_logiqa_en agie_lsat_ar agie_lsat_lr arc_challenge arc_easy bbh coconot "
    "commonsense_qa hellaswag musr piqa winogrande",
    "math": "agie_math agie_sat_math aime2024 aime2025 gsm8k infinite_bench_math_calc infinite_bench_math_find math "
    "mgsm",
    "code": "bfcl infinite_bench_code_debug infinite_bench_code_run",
    "reading": "agie_lsat_rc agie_sat_en agie_sat_en_without_passage drop race_h squad",
    "long_context": "infinite_bench_kv_retrieval infinite_bench_longbook_choice_eng infinite_bench_longdialogue_qa_eng "
    "infinite_bench_number_string infinite_bench_passkey niah",
    "safety": "agentharm agentharm_benign agentic_misalignment ahb air_bench bbeh bbeh_mini bbq bold make_me_pay mask "
    "personality_BFI personality_TRAIT sosbench stereoset strong_reject sycophancy truthfulqa uccb wmdp_bio wmdp_chem "
    "wmdp_cyber xstest",
    "domain_specific": "chembench healthbench healthbench_consensus healthbench_hard lab_bench_cloning_scenarios "
    "lab_bench_dbqa lab_bench_litqa lab_bench_protocolqa lab_bench_seqqa lab_bench_suppqa lab_bench_tableqa medqa "
    "pubmedqa sec_qa_v1 sec_qa_v1_5_shot sec_qa_v2 sec_qa_v2_5_shot",
    "instruction_following": "ifeval",
    "system": "pre_flight",
}
ISSUE_MULTIMODAL = {
    "cyse3_visual_prompt_injection",
    "docvqa",
    "mathvista",
    "mmiu",
    "mmmu_multiple_choice",
    "mmmu_open",
    "vstar_bench_attribute_recognition",
    "vstar_bench_spatial_relationship_reasoning",
    "lab_bench_figqa",
}
ISSUE_JUDGE = {
    "simpleqa",
    "agentharm",
    "agentharm_benign",
    "mask",
    "sosbench",
    "xstest",
    "healthbench",
    "healthbench_consensus",
    "healthbench_hard",
}
INSPECT_GRADED = {"coconot", "hle", "niah", "simpleqa_verified", "strong_reject", "uccb"}
ISSUE_GATED = {"hle", "lingoly", "lingoly_too", "mask", "personality_TRAIT"}
TEXT = {name: category for category, names in ISSUE_TEXT_BENCHMARKS.items() for name in names.split()}
# Catalog entries beyond the reference's 105: lm-eval's MMLU marketing subject and the rows of ../shared/benchdata.
EXTRA = {
    "mmlu_marketing",
    "gsm8k_local",
    "arc_challenge_local",
    "mmlu_abstract_algebra_local",
    "mmlu_college_biology_local",
    "mmlu_high_school_geography_local",
    "mmlu_marketing_local",
}


@pytest.fixture(scope="module")
def lm_eval_tasks() -> set[str]:
    from lm_eval.tasks import TaskManager

    return set(TaskManager().all_tasks)


def test_the_catalog_is_the_issues_105_benchmarks_plus_the_extras_by_category():
    assert len(TEXT) == 96
    assert {name: e["category"] for name, e in catalog.entries().items() if name in TEXT} == TEXT
    assert {name for name, e in catalog.entries().items() if e["category"] == "multimodal"} == ISSUE_MULTIMODAL
    assert set(catalog.names()) == set(TEXT) | ISSUE_MULTIMODAL | EXTRA
    assert {e["category"] for e in catalog.entries().values()} == set(catalog.CATEGORIES)
    assert len(catalog.CATEGORIES) == 11


def test_every_lm_eval_task_is_known_to_the_installed_lm_eval(lm_eval_tasks):
    tasks = {name: e["lm_eval"] for name, e in catalog.entries().items() if "lm_eval" in e}
    assert len(tasks) == 47
    assert {name: task for name, task in tasks.items() if task not in lm_eval_tasks} == {}
    lm_eval_names = {name for name, e in catalog.entries().items() if "lm_eval" in e}
    assert {alias for alias, name in catalog.aliases().items() if name in lm_eval_names} <= lm_eval_tasks


def test_every_reference_benchmark_names_its_inspect_task():
    inspect = {name: e.get("inspect") for name, e in catalog.entries().items() if name not in EXTRA}
    # ahb: no released inspect_evals (0.26 to 0.28) has it; the reference runs a build of its own
    assert inspect == {name: name for name in set(TEXT) | ISSUE_MULTIMODAL} | {"ahb": None}
    assert catalog.unavailable(catalog.entries()["ahb"]).startswith("has no implementation in lm-eval 0.4 or")


def test_every_inspect_task_is_known_to_the_installed_inspect_evals():
    import inspect_evals._registry as registry  # every task function of the package, found offline

    tasks = {name: e["inspect"] for name, e in catalog.entries().items() if "inspect" in e}
    assert len(tasks) == 104
    assert {name: task for name, task in tasks.items() if not callable(getattr(registry, task, None))} == {}


def test_judge_gated_and_hosted_only_flags_match_the_issue():
    flagged = {
        flag: {n for n, e in catalog.entries().items() if e.get(flag)} for flag in ("judge", "gated", "hosted_only")
    }
    # inspect_evals grades these with its grader role too: flagged, so they never fall back to self-grading
    assert flagged["judge"] == ISSUE_JUDGE | INSPECT_GRADED and len(ISSUE_JUDGE) == 9
    # gpqa_diamond is gated too: lm-eval reads it from the gated hub dataset Idavidrein/gpqa.
    assert flagged["gated"] == ISSUE_GATED | {"gpqa_diamond"} and len(ISSUE_GATED) == 5
    assert flagged["hosted_only"] == {"bfcl", "agentharm", "agentharm_benign"}


def test_entries_are_complete_and_descriptions_one_line():
    for name, entry in catalog.entries().items():
        assert entry["description"].strip() and "\n" not in entry["description"], name
        assert len(entry["description"]) <= 160, name
        assert entry["category"] in catalog.CATEGORIES, name
        if "lm_eval" in entry:
            assert entry["output"] in ("multiple_choice", "generate"), name
            assert "," in entry["metric"] and 0.0 <= entry["baseline"] < 1.0, name
    every = [*catalog.names(), *catalog.aliases()]
    assert len(every) == len(set(every))


def test_existing_entries_keep_their_behaviour():
    expected = {
        "gsm8k": ("gsm8k", "exact_match,strict-match", 0.0, 5),
        "arc_challenge": ("arc_challenge", "acc_norm,none", 0.25, 25),
        "mmlu": ("mmlu", "acc,none", 0.25, 5),
        "mmlu_pro": ("leaderboard_mmlu_pro", "acc,none", 0.1, 5),
        "math": ("leaderboard_math_hard", "exact_match,none", 0.0, 4),
        "truthfulqa": ("truthfulqa_mc2", "acc,none", 0.0, 0),
        "musr": ("leaderboard_musr", "acc_norm,none", 0.33, 0),
    }
    got = {}
    for name in expected:
        bench = catalog.resolve(name)
        got[name] = (bench.task, bench.metric, bench.baseline, bench.fewshot)
    assert got == expected


def test_aliases_resolve_to_the_catalog_name():
    assert catalog.resolve("mmlu").name == "mmlu_5_shot"
    assert catalog.resolve("agieval_lsat_ar").name == "agie_lsat_ar"
    assert catalog.resolve("leaderboard_bbh").task == "leaderboard_bbh"
    assert catalog.resolve("arc_challenge").name == "arc_challenge"


@pytest.fixture
def without_inspect(monkeypatch):
    """An installation without the ``[inspect]`` extra."""
    monkeypatch.setattr(catalog, "installed_backends", lambda: frozenset({"lm_eval"}))


def test_a_benchmark_no_installation_runs_is_refused_when_it_is_resolved():
    with pytest.raises(catalog.BackendUnavailable) as raised:
        catalog.resolve("docvqa")
    assert str(raised.value).startswith(
        "benchmark 'docvqa' takes image input (multimodal), which evaljobs does not support yet"
    )


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "hle",
            "benchmark 'hle' needs the Inspect backend (inspect_evals task 'hle'), which is not installed: "
            "pip install 'airflow-provider-evaljobs[inspect]'",
        ),
        ("healthbench", "benchmark 'healthbench' needs the Inspect backend (inspect_evals task 'healthbench')"),
    ],
)
def test_what_this_installation_cannot_run_is_named_with_its_extra_where_the_job_runs(name, message, without_inspect):
    benchmark = catalog.resolve(name)  # a spec validates the same with or without the harness
    assert benchmark.backend == "inspect"
    assert catalog.missing_harness(benchmark).startswith(message)


def test_without_any_harness_lm_eval_benchmarks_name_the_engine_extra(monkeypatch):
    monkeypatch.setattr(catalog, "installed_backends", lambda: frozenset())
    assert catalog.missing_harness(catalog.resolve("gsm8k")) == (
        "benchmark 'gsm8k' needs lm-eval, which is not installed: "
        "pip install 'airflow-provider-evaljobs[engine]' where jobs run"
    )
    # Airflow's side of Kubernetes mode: the forms offer what the catalog implements, the pods check their own
    assert set(catalog.runnable_names()) == set(catalog.names()) - ISSUE_MULTIMODAL - {"ahb"}


def test_a_job_naming_an_inspect_only_benchmark_parses_and_its_preflight_refuses_it(without_inspect):
    from evaljobs.engine.preflight import installation_problems, load_benchmarks
    from evaljobs.engine.spec import JobSpec

    spec = JobSpec.parse({"model": {"checkpoint": "/m"}, "benchmarks": ["gsm8k", "niah"]})
    [problem] = installation_problems(spec, load_benchmarks(spec.benchmarks))
    assert problem.startswith("benchmark 'niah' needs the Inspect backend")


def test_inspect_runs_what_only_it_implements_and_lm_eval_the_rest():
    hle, gsm8k = catalog.resolve("hle"), catalog.resolve("gsm8k")
    assert (hle.backend, hle.output, hle.metric, hle.gated) == ("inspect", "generate", "accuracy", True)
    assert (gsm8k.backend, gsm8k.metric) == ("lm_eval", "exact_match,strict-match")
    on_inspect = gsm8k.on("inspect")
    assert (on_inspect.backend, on_inspect.inspect, on_inspect.needs_logprobs) == ("inspect", "gsm8k", False)
    assert catalog.resolve("arc_challenge_local").on("inspect").backend == "lm_eval"  # no Inspect task: unchanged
    with pytest.raises(catalog.BackendUnavailable, match="takes image input"):
        catalog.resolve("docvqa")


def test_runnable_names_are_every_text_benchmark_with_inspect_and_the_lm_eval_ones_without(monkeypatch):
    runnable = set(catalog.runnable_names())
    assert runnable == set(catalog.names()) - ISSUE_MULTIMODAL - {"ahb"} and len(runnable) == 102
    monkeypatch.setattr(catalog, "installed_backends", lambda: frozenset({"lm_eval"}))
    runnable = set(catalog.runnable_names())
    assert runnable == {name for name, e in catalog.entries().items() if "lm_eval" in e or "custom" in e}
    assert len(runnable) == 53
    assert not runnable & (ISSUE_MULTIMODAL | ISSUE_JUDGE)


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
    with pytest.raises(LookupError, match="did you mean agieval_lsat_lr"):
        catalog.resolve("agieval_lsat_lrr")
    with pytest.raises(LookupError, match="run `evaljobs catalog`"):
        catalog.resolve("zzzzzz")


def test_missing_data_root_is_explained(monkeypatch):
    from evaljobs.engine.errors import SpecError

    monkeypatch.delenv("EVALJOBS_DATA_ROOT")
    with pytest.raises(SpecError, match="uses an unset variable; set it \\(e.g. EVALJOBS_DATA_ROOT\\)"):
        catalog.load("gsm8k_local")


def test_generative_names_are_runnable_and_take_the_type_of_custom_files_into_account():
    generative = catalog.generative_names()
    assert {"gsm8k", "gsm8k_local", "ifeval", "math", "aime2024", "simpleqa", "squad"} <= set(generative)  # Inspect's
    assert not {"arc_challenge", "arc_challenge_local", "mmlu_marketing_local", "docvqa"} & set(generative)
    assert set(generative) <= set(catalog.runnable_names())
    assert all(catalog.load(name).output == "generate" for name in generative if name.endswith("_local"))
