import json
import re
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest

from evaljobs.engine import leaderboard, report
from evaljobs.engine.errors import SpecError
from evaljobs.engine.report import K_MAX, render_html, write_examples, write_report
from evaljobs.engine.results import ResultsStore, slug, write_jsonl
from tests.factories import result_row

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LONG_PROMPT = "The following are multiple choice questions (with answers).\n\n" * 20 + "Question 1?\nAnswer:"


def mc(doc_id: int, target: int, lls: list[float]) -> dict:
    """A multiple-choice record as the harness writes it (the highest log-likelihood is the answer)."""
    output = max(range(len(lls)), key=lls.__getitem__)
    choices = [f" choice {c}" for c in "ABCD"[: len(lls)]]
    return {"task": "arc", "doc_id": doc_id, "input": f"Question {doc_id}?\nAnswer:", "target": target,
            "score": float(output == target), "choices": choices, "loglikelihoods": lls, "output": output}  # fmt: skip


def gen(doc_id: int, target: str, output: str, raw: str | None = None) -> dict:
    return {"task": "gsm8k", "doc_id": doc_id, "input": f"Problem {doc_id}\nAnswer:", "target": target,
            "score": float(output == target), "output": output, "raw_output": raw or output}  # fmt: skip


def bundle(root: Path, model: str, benchmark: str, samples: list[dict], settings_hash: str, examples: bool) -> str:
    """A bundle as a job writes it; without ``examples``, as older versions wrote it (no examples.json)."""
    folder = root / "bundles" / slug(model) / slug(benchmark) / settings_hash
    write_jsonl(folder / "samples.jsonl", samples)
    if examples:
        write_examples(folder, samples)
    return str(folder)


def row(root: Path, model: str, benchmark: str, score: float, *, baseline=0.25, samples=(), stderr=None, **kw):
    """A result row whose bundle holds ``samples`` (and, unless ``examples=False``, examples.json); ``stderr``
    adds the harness's stderr metric."""
    base = result_row(model, benchmark, score, baseline, kw.pop("settings_hash", "h"))
    metrics = {"acc,none": score} | ({"acc_stderr,none": stderr} if stderr is not None else {})
    folder = bundle(root, model, benchmark, list(samples), base.settings_hash, kw.pop("examples", True))
    return replace(base, metrics=metrics, bundle=folder, recorded_at="2025-06-01T12:00:00+00:00", **kw)


def ranked_records() -> list[dict]:
    """12 right and 12 wrong multiple-choice answers by various margins, and two generative ones (margin 0)."""
    right = [mc(i, 0, [-1.0, -1.0 - (i % 6 + 1) / 2, -9.0, -9.0]) for i in range(12)]  # by 0.5 .. 3
    wrong = [mc(12 + i, 0, [-2.0 - i % 4, -1.0, -9.0, -9.0]) for i in range(12)]  # by -1 .. -4
    return right + wrong + [gen(24, "1", "1"), gen(25, "1", "2")]


def demo_rows(root: Path) -> list:
    """Five models (one without gsm8k) on arc (multiple choice) and gsm8k (generative), with examples."""
    arc = [mc(0, 0, [-1.0, -5.0, -6.0, -7.0]), mc(1, 2, [-1.0, -9.0, -3.0, -2.0]), mc(2, 1, [-4.0, -2.5, -2.0, -8.0])]
    arc[1]["input"] = LONG_PROMPT
    math = [gen(0, "18", "18"), gen(1, "3", "4", " 2 * 2 = 4 bolts"), gen(2, "70000", "150")]
    math[2]["input"] = "Is 1 < 2 && <b>3</b> > 2?\nAnswer:"
    scores = {"qwen2.5-0.5b": (0.62, 0.31), "smollm2-135m": (0.30, 0.03), "llama-3.2-1b": (0.55, 0.45),
              "gemma-2-2b": (0.71, 0.52), "phi-3-mini": (0.80, None)}  # fmt: skip
    rows = []
    for model, (arc_score, math_score) in scores.items():
        rows.append(row(root, model, "arc_challenge", arc_score, samples=arc, stderr=0.04))
        if math_score is not None:
            rows.append(row(root, model, "gsm8k", math_score, baseline=0.0, samples=math, stderr=0.02))
    return rows


def table(page: str) -> list[list[list[str]]]:
    """The words of the leaderboard's body cells, row by row."""
    body = re.search(r'<table id="leaderboard">.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    return [
        [re.sub(r"<[^>]+>", " ", cell).split() for cell in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
        for tr in re.findall(r"<tr>(.*?)</tr>", body, re.S)
    ]


def drilldown(page: str) -> dict:
    """The drill-down data the page's script shows examples from."""
    return json.loads(re.search(r'<script type="application/json" id="drilldown-data">(.*?)</script>', page).group(1))


def shown_docs(page: str, label: str, benchmark: str) -> dict[str, list[int]]:
    """Doc ids of the worst and best examples the drill-down shows for (label, benchmark)."""
    section = next(s for s in drilldown(page)["sections"] if (s["label"], s["benchmark"]) == (label, benchmark))
    return {side: [x["doc"] for x in section[side]] for side in ("worst", "best")}


def test_table_has_one_row_per_entry_in_rank_order(tmp_path):
    rows = demo_rows(tmp_path)
    cells = table(render_html(leaderboard.build("p", rows), rows))
    # rank, model, average, benchmarks, then arc and gsm8k: raw score above the normalised one
    assert [c[:2] + c[3:5] + c[6:] for c in cells] == [
        [["1"], ["gemma-2-2b"], ["56.7"], ["2"], ["0.710", "61.3"], ["0.520", "52.0"]],
        [["2"], ["llama-3.2-1b"], ["42.5"], ["2"], ["0.550", "40.0"], ["0.450", "45.0"]],
        [["3"], ["qwen2.5-0.5b"], ["40.2"], ["2"], ["0.620", "49.3"], ["0.310", "31.0"]],
        [["4"], ["smollm2-135m"], ["4.8"], ["2"], ["0.300", "6.7"], ["0.030", "3.0"]],
        [["5"], ["phi-3-mini"], ["73.3"], ["1"], ["0.800", "73.3"], ["–"]],
    ]
    assert cells[0][5] == ["2025-06-01", "12:00"]


def test_charts_have_a_bar_per_model_and_stderr_whiskers(tmp_path):
    rows = demo_rows(tmp_path)
    page = render_html(leaderboard.build("p", rows), rows)
    charts = dict(re.findall(r'<figure class="chart" data-benchmark="([^"]+)">(.*?)</figure>', page, re.S))
    assert list(charts) == ["arc_challenge", "gsm8k"]
    assert charts["gsm8k"].count('class="bar"') == 4 and charts["arc_challenge"].count('class="bar"') == 5
    # best first, with the stderr in the hover title and as a whisker
    titles = re.findall(r"<title>([^<]+)</title>", charts["arc_challenge"])
    assert titles[:2] == ["phi-3-mini: 0.800 ± 0.040", "gemma-2-2b: 0.710 ± 0.040"]
    assert charts["arc_challenge"].count('class="err"') == 5
    assert "random baseline: 0.25" in charts["arc_challenge"] and "random baseline" not in charts["gsm8k"]
    average = re.search(r'id="average-chart">(.*?)</figure>', page, re.S).group(1)
    assert re.findall(r"<title>([^<]+)</title>", average)[0] == "gemma-2-2b: 56.7"
    heatmap = re.search(r'<div class="heatmap">(<svg.*?</svg>)', page, re.S).group(1)
    cells = re.findall(r'<rect [^>]*fill="(#[0-9a-f]{6})"><title>([^<]+)</title>', heatmap)
    board = leaderboard.build("p", rows)
    assert len(cells) == len(board.entries) * len(board.benchmarks)  # a cell per model and benchmark
    assert ">56<" not in heatmap and ">61<" in heatmap  # cells carry their values, not the average's
    missing = [title for color, title in cells if color == "#e5e7eb"]
    assert all(title.endswith(": no result") for title in missing)
    assert report._viridis(0.0) == "#440154" and report._viridis(1.0) == "#fde725"  # viridis' ends
    assert report._viridis(0.55) == "#229c88"  # halfway between its 0.5 and 0.6 deciles


def test_drilldown_shows_the_worst_and_best_examples(tmp_path):
    rows = demo_rows(tmp_path)
    page = render_html(leaderboard.build("p", rows), rows, examples=2)
    # arc: doc 0 right by a margin of 4, doc 1 wrong by 2 (target -3 vs -1), doc 2 wrong by 0.5
    assert shown_docs(page, "gemma-2-2b", "arc_challenge") == {"worst": [1, 2], "best": [0, 2]}
    # gsm8k: only doc 0 is right; equal scores keep file order
    assert shown_docs(page, "gemma-2-2b", "gsm8k") == {"worst": [1, 2], "best": [0, 1]}
    options = re.findall(r'<option value="(dd-\d+)">([^<]+)</option>', page)
    assert options[:3] == [("dd-0", "gemma-2-2b · arc_challenge"), ("dd-1", "gemma-2-2b · gsm8k"),
                           ("dd-2", "llama-3.2-1b · arc_challenge")]  # fmt: skip
    data = drilldown(page)
    assert [s["id"] for s in data["sections"]] == [o[0] for o in options] and len(options) == 9
    worst = data["sections"][0]["worst"][0]
    texts = [data["texts"][worst[k]] for k in ("target", "output")]
    assert texts == ["C. choice C", "A. choice A"] and worst["margin"] == "-2.00" and worst["raw"] is None
    gsm8k = data["sections"][1]["worst"][0]
    assert data["texts"][gsm8k["raw"]] == " 2 * 2 = 4 bolts"  # the raw output, when it is not the extracted one
    # each text once, however many results show it
    assert len(set(data["texts"])) == len(data["texts"]) and page.count("Question 1?") == 1


def peak_memory(rows: list, examples: int) -> tuple[str, int]:
    tracemalloc.start()
    page = render_html(leaderboard.build("p", rows), rows, examples=examples)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return page, peak


def test_the_job_stores_the_worst_and_best_examples(tmp_path):
    write_examples(tmp_path, ranked_records())
    stored = json.loads((tmp_path / "examples.json").read_text(encoding="utf-8"))
    assert stored["count"] == 26 and K_MAX == 5
    # wrong by 4, 3 (three each, earlier first): the two first wrong by 3 close the five
    assert [r["doc"] for r in stored["worst"]] == [15, 19, 23, 14, 18]
    # right by 3, 2.5 (two each), then the first right by 2
    assert [r["doc"] for r in stored["best"]] == [5, 11, 4, 10, 3]
    record = ranked_records()[15]  # stored as the page shows it: choices as "B. text", the margin, in full
    assert stored["worst"][0] == {
        "doc": 15,
        "task": record["task"],
        "score": "0",
        "passed": False,
        "margin": "-4.00",  # wrong by 4: the correct choice's log-likelihood minus the best wrong one's
        "input": record["input"],
        "target": f"{chr(65 + record['target'])}. {record['choices'][record['target']].strip()}",
        "output": f"{chr(65 + record['output'])}. {record['choices'][record['output']].strip()}",
        "raw": None,
    }


def test_examples_json_gives_the_page_scanning_samples_gives(tmp_path):
    rows = [*demo_rows(tmp_path), row(tmp_path, "m", "arc_challenge", 0.5, samples=ranked_records())]
    board, bundles = leaderboard.build("p", rows), [Path(r.bundle) for r in rows]
    samples = {b: (b / "samples.jsonl").read_bytes() for b in bundles}
    for b in bundles:  # examples.json alone: what the page shows must come from it
        (b / "samples.jsonl").unlink()
    stored = {k: drilldown(render_html(board, rows, examples=k)) for k in (2, 3, K_MAX)}
    for b in bundles:  # samples.jsonl alone, as an older version wrote a bundle
        (b / "samples.jsonl").write_bytes(samples[b])
        (b / "examples.json").unlink()
    scanned = {k: drilldown(render_html(board, rows, examples=k)) for k in (2, 3, K_MAX)}
    assert stored == scanned
    assert shown_docs(render_html(board, rows, examples=3), "m", "arc_challenge") == {
        "worst": [15, 19, 23],
        "best": [5, 11, 4],
    }
    section = next(s for s in stored[K_MAX]["sections"] if s["label"] == "m")
    assert section["count"] == 26 and len(section["worst"]) == len(section["best"]) == K_MAX


def test_more_examples_than_stored_are_scanned_for(tmp_path):
    rows = [row(tmp_path, "m", "arc_challenge", 0.5, samples=ranked_records())]
    page = render_html(leaderboard.build("p", rows), rows, examples=11)
    assert shown_docs(page, "m", "arc_challenge")["worst"][-2:] == [12, 16]  # the 6th to 11th are not stored


def test_a_large_samples_file_is_streamed_keeping_only_k(tmp_path):
    """A bundle without examples.json (written by an older version) is scanned."""
    samples = [mc(i, 0, [-1.0 - (i % 97) / 100, -2.0, -3.0, -4.0]) for i in range(20_000)]  # all right
    samples[12_345] = mc(12_345, 0, [-9.0, -1.0, -5.0, -5.0])  # the most confident mistake
    samples[777] = mc(777, 0, [-9.0, -8.9, -10.0, -10.0])  # a near miss
    big = [row(tmp_path, "m", "arc", 0.99, samples=samples, examples=False)]
    small = [row(tmp_path, "s", "arc", 1, samples=samples[:4], examples=False)]
    peak_memory(small, 3)  # imports and caches are not what is measured
    page, peak = peak_memory(big, 3)
    assert shown_docs(page, "m", "arc") == {"worst": [12_345, 777, 96], "best": [0, 97, 194]}
    assert drilldown(page)["sections"][0]["count"] == 20_000
    # Holding the 20k parsed records takes ~6x the file's 4.4 MB; streamed, they cost what 4 rows cost.
    size = Path(big[0].bundle, "samples.jsonl").stat().st_size
    assert peak < peak_memory(small, 3)[1] + size / 20, "samples were not streamed"


def test_user_strings_are_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    sample = gen(0, "<b>x</b>", '<img src=x onerror="alert(2)">') | {"input": "</pre></script><script>alert(3)"}
    rows = [row(tmp_path, evil, 'b"><svg onload=alert(4)>', 0.5, samples=[sample])]
    page = render_html(leaderboard.build("p", rows), rows)
    assert page.count("<script") == 2  # the page's data and code
    assert "<img" not in page and "<svg onload" not in page and "<b>x" not in page and "</script><" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    data = drilldown(page)  # the texts the script shows (as text nodes), unchanged
    assert {evil + ' · b"><svg onload=alert(4)>', "</pre></script><script>alert(3)"} <= {
        data["sections"][0]["label"] + " · " + data["sections"][0]["benchmark"],
        *data["texts"],
    }


def test_settings_variants_are_listed(tmp_path):
    few, many = {"limit": 10, "num_fewshot": 0, "seed": 1}, {"limit": 200, "num_fewshot": 0, "seed": 1}
    rows = [
        row(tmp_path, "m", "b", 0.5, settings_hash="s1", settings=few),
        row(tmp_path, "m", "b", 0.6, settings_hash="s2", settings=many),
    ]
    page = render_html(leaderboard.build("p", rows), rows)
    settings = re.search(r'<table id="settings-table">(.*?)</table>', page, re.S).group(1)
    assert re.findall(r"<th[^>]*>([^<]+)</th>", settings) == ["Variant", "Settings hash", "limit"]
    assert [re.sub(r"<[^>]+>", " ", r).split() for r in re.findall(r"<tr>(.*?)</tr>", settings)[1:]] == [
        ["limit=10", "s1", "10"],
        ["limit=200", "s2", "200"],
    ]
    assert "never merged" in page
    assert "same score-relevant settings" in render_html(leaderboard.build("p", rows[:1]), rows[:1])


def test_the_page_works_offline(tmp_path):
    rows = demo_rows(tmp_path)
    page = render_html(leaderboard.build("p", rows), rows)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "@import" not in page and not re.search(r"url\(\s*['\"]?(https?:)?//", page)
    assert "<!DOCTYPE svg" not in page


def test_write_report_writes_the_page_and_pngs(tmp_path):
    home = tmp_path / "home"
    for r in demo_rows(tmp_path):
        ResultsStore(home).record(r)
    index = write_report("p", home, tmp_path / "out")
    assert index == tmp_path / "out" / "index.html" and "gemma-2-2b" in index.read_text()
    pngs = sorted(p.name for p in (tmp_path / "out" / "charts").iterdir())
    assert pngs == ["_average.png", "_heatmap.png", "arc_challenge.png", "gsm8k.png"]
    for name in pngs:
        data = (tmp_path / "out" / "charts" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5_000, name


def test_a_project_without_results_is_an_error(tmp_path):
    with pytest.raises(SpecError, match=r"project: no results for 'nothing' under .*; run a job first"):
        write_report("nothing", tmp_path / "home", tmp_path / "out")
    assert not (tmp_path / "out").exists()
