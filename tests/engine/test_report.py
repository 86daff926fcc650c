import json
import re
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
from matplotlib.container import ErrorbarContainer

from evaljobs.engine import compare, leaderboard, report
from evaljobs.engine.errors import SpecError
from evaljobs.engine.report import FLIPS_SHOWN, K_MAX, render_html, write_examples, write_report
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


# Which of 40 examples each model gets wrong: "close" differs from "strong" by 3 arc and 2 gsm8k examples (one tier),
# "weak" by most (the next tier). A wrong answer is the k-th choice after the target (k: 1, 2, 3 by model).
WRONG = {
    "strong": ({i for i in range(40) if i % 5 == 0}, {i for i in range(40) if i % 4 == 0}),
    "close": ({i for i in range(40) if i % 5 == 0} - {0} | {1, 2}, {i for i in range(40) if i % 4 == 0} - {4} | {3}),
    "weak": ({i for i in range(40) if i % 4}, {i for i in range(40) if i % 10}),
}


def paired_rows(root: Path) -> list:
    """Three models on the same 40 arc (multiple choice) and 40 gsm8k (generative) examples, their scores the
    means of their examples' (so each result has a CI), wrong on the examples in ``WRONG``."""
    rows = []
    for k, (model, (arc_wrong, math_wrong)) in enumerate(WRONG.items(), start=1):
        arc, math = [], []
        for i in range(40):
            answer = (i % 4 + k) % 4 if i in arc_wrong else i % 4
            arc.append(mc(i, i % 4, [-1.0 if c == answer else -4.0 for c in range(4)]))
            math.append(gen(i, str(7 * i), str(7 * i + (k if i in math_wrong else 0))))
        rows.append(row(root, model, "arc_challenge", 1 - len(arc_wrong) / 40, samples=arc))
        rows.append(row(root, model, "gsm8k", 1 - len(math_wrong) / 40, baseline=0.0, samples=math))
    return rows


def comparisons(page: str) -> dict:
    """The compare view's data."""
    return drilldown(page)["compare"]


def table(page: str) -> list[list[list[str]]]:
    """The words of the leaderboard's body cells, row by row."""
    body = re.search(r'<table id="leaderboard"[^>]*>.*?<tbody>(.*?)</tbody>', page, re.S).group(1)
    return [
        [re.sub(r"<[^>]+>", " ", cell).split() for cell in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
        for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    ]


def drilldown(page: str) -> dict:
    """The drill-down data the page's script shows examples from."""
    return json.loads(re.search(r'<script type="application/json" id="drilldown-data">(.*?)</script>', page).group(1))


def sections(page: str) -> list[dict]:
    """The drill-down's sections, their examples' texts in place of the indexes."""
    data = drilldown(page)

    def resolved(x: dict) -> dict:
        return x | {k: data["texts"][x[k]] for k in report.TEXT_FIELDS if x[k] is not None}

    return [s | {side: [resolved(x) for x in s[side]] for side in ("worst", "best")} for s in data["sections"]]


def shown_docs(page: str, label: str, benchmark: str) -> dict[str, list[int]]:
    """Doc ids of the worst and best examples the drill-down shows for (label, benchmark)."""
    section = next(s for s in drilldown(page)["sections"] if (s["label"], s["benchmark"]) == (label, benchmark))
    return {side: [x["doc"] for x in section[side]] for side in ("worst", "best")}


def test_table_has_one_row_per_entry_in_rank_order(tmp_path):
    rows = demo_rows(tmp_path)
    cells = table(render_html(leaderboard.build("p", rows), rows))
    # rank, tier, model, average, benchmarks, then arc and gsm8k: raw score above the normalised one. The demo's
    # scores are not the means of their examples' (the same 3 for all): no CIs, and nobody is told apart
    assert [c[:3] + c[4:6] + c[7:] for c in cells] == [
        [["1"], ["1"], ["gemma-2-2b"], ["56.7"], ["2"], ["0.710", "61.3"], ["0.520", "52.0"]],
        [["2"], ["1"], ["llama-3.2-1b"], ["42.5"], ["2"], ["0.550", "40.0"], ["0.450", "45.0"]],
        [["3"], ["1"], ["qwen2.5-0.5b"], ["40.2"], ["2"], ["0.620", "49.3"], ["0.310", "31.0"]],
        [["4"], ["1"], ["smollm2-135m"], ["4.8"], ["2"], ["0.300", "6.7"], ["0.030", "3.0"]],
        [["5"], ["1"], ["phi-3-mini"], ["73.3"], ["1"], ["0.800", "73.3"], ["–"]],
    ]
    assert cells[0][6] == ["2025-06-01", "12:00"]


def test_the_table_shows_tiers_and_the_leaderboards_cis(tmp_path):
    rows = paired_rows(tmp_path)
    board = leaderboard.build("p", rows)
    page = render_html(board, rows)
    cells, shown = table(page), board.as_dict()["rows"]
    assert [(c[1], c[2]) for c in cells] == [(["1"], ["strong"]), (["1"], ["close"]), (["2"], ["weak"])]
    assert [r["tier"] for r in shown] == [1, 1, 2]
    # the average with its CI beneath; each score's CIs (raw and normalised) in its cell's hover title
    for cell, r in zip(cells, shown, strict=True):
        assert cell[4] == [f"{r['average']:.1f}", f"[{r['average_ci'][0]:.1f},", f"{r['average_ci'][1]:.1f}]"]
    titles = re.findall(r'<td class="score"[^>]* title="([^"]+)"', page)
    (low, high), (nlow, nhigh) = shown[2]["ci"]["gsm8k"], shown[2]["normalised_ci"]["gsm8k"]
    assert titles[5] == f"gsm8k: 0.100, 95 % CI [{low:.3f}, {high:.3f}]; normalised 10.0 [{nlow:.1f}, {nhigh:.1f}]"
    assert 0.0 < low < 0.1 < high < 1.0
    # a line where a tier starts; the rule, with its level for 3 models: 5 % / 2 comparisons
    starts = re.findall(r'<tr( class="tier-start")? data-tier="(\d*)">', page)
    assert starts == [("", "1"), ("", "1"), (' class="tier-start"', "2")]
    rule = re.sub(r"<[^>]+>", "", re.search(r'<p class="hint" id="tier-rule">(.*?)</p>', page, re.S).group(1))
    assert "cannot be told apart from the tier's first model" in rule and "over the 2 comparisons (level 2.5 %)" in rule


def charts_of(page: str) -> dict[str, str]:
    """The SVG of each benchmark's chart."""
    return dict(re.findall(r'<figure class="chart" data-benchmark="([^"]+)">(.*?)</figure>', page, re.S))


def test_charts_have_a_bar_per_model(tmp_path):
    rows = demo_rows(tmp_path)
    page = render_html(leaderboard.build("p", rows), rows)
    charts = charts_of(page)
    assert list(charts) == ["arc_challenge", "gsm8k"]
    assert charts["gsm8k"].count('class="bar"') == 4 and charts["arc_challenge"].count('class="bar"') == 5
    # best first; no CI (the harness's stderr metric is not one): no whisker
    titles = re.findall(r"<title>([^<]+)</title>", charts["arc_challenge"])
    assert titles[:2] == ["phi-3-mini: 0.800", "gemma-2-2b: 0.710"] and 'class="err"' not in page
    figures = dict(report._figures(leaderboard.build("p", rows), rows))
    assert not any(isinstance(c, ErrorbarContainer) for f in figures.values() for c in f.axes[0].containers)
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


def whiskers(svg: str, width: float = 480.0) -> list[tuple[str, float, float]]:
    """(hover title, low, high) of each bar's whisker, its ends mapped back from pixels to values (0..1)."""
    left = min(200.0, width * 0.38)
    plot = width - left - 52.0
    found = re.findall(r'<title>([^<]+)</title>.*?<path class="err" d="M([\d.]+) [\d.]+H([\d.]+)', svg)
    return [(title, (float(lo) - left) / plot, (float(hi) - left) / plot) for title, lo, hi in found]


def test_whiskers_are_the_leaderboards_cis(tmp_path):
    rows = paired_rows(tmp_path)
    board = leaderboard.build("p", rows)
    page = render_html(board, rows)
    shown = {r["model"]: r for r in board.as_dict()["rows"]}
    for benchmark, svg in charts_of(page).items():
        found = whiskers(svg)
        assert [title.split(":")[0] for title, *_ in found] == ["strong", "close", "weak"]  # best first
        for title, low, high in found:
            ci, score = shown[title.split(":")[0]]["ci"][benchmark], shown[title.split(":")[0]]["scores"][benchmark]
            assert title.endswith(f": {score:.3f}, 95 % CI [{ci[0]:.3f}, {ci[1]:.3f}]")
            assert (low, high) == pytest.approx(ci, abs=0.001)  # pixels to 0.1 of 480
    average = whiskers(re.search(r'id="average-chart">(.*?)</figure>', page, re.S).group(1), 960.0)
    assert [title for title, *_ in average] == [
        f"{m}: {r['average']:.1f}, 95 % CI [{r['average_ci'][0]:.1f}, {r['average_ci'][1]:.1f}]"
        for m, r in shown.items()
    ]
    bounds = [x for r in shown.values() for x in r["average_ci"]]
    assert [100 * x for _, low, high in average for x in (low, high)] == pytest.approx(bounds, abs=0.1)
    # the PNGs' twins: matplotlib's error bars span the same CIs
    figures = dict(report._figures(board, rows))
    for name, cis in [("_average", [r["average_ci"] for r in shown.values()]),
                      ("arc_challenge", [r["ci"]["arc_challenge"] for r in shown.values()])]:  # fmt: skip
        (errors,) = [c for c in figures[name].axes[0].containers if isinstance(c, ErrorbarContainer)]
        segments = errors.lines[2][0].get_segments()  # one horizontal segment a bar
        assert [x for s in segments for x in (s[0][0], s[1][0])] == pytest.approx(
            [x for ci in cis for x in ci], abs=1e-6
        )
    mixed = report._bar_figure([report.Bar("a", 0.5, (0.4, 0.6)), report.Bar("b", 0.3)], "t", 1.0, None)
    (errors,) = [c for c in mixed.axes[0].containers if isinstance(c, ErrorbarContainer)]
    assert [s.tolist() for s in errors.lines[2][0].get_segments()] == [[[0.4, 0.0], [0.6, 0.0]], []]  # b: none
    # the drill-down's header carries the result's CI too
    arc = next(s for s in drilldown(page)["sections"] if (s["label"], s["benchmark"]) == ("weak", "arc_challenge"))
    assert arc["ci"] == "[{:.3f}, {:.3f}]".format(*shown["weak"]["ci"]["arc_challenge"])


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
    stored = {k: sections(render_html(board, rows, examples=k)) for k in (2, 3, K_MAX)}
    for b in bundles:  # samples.jsonl alone, as an older version wrote a bundle
        (b / "samples.jsonl").write_bytes(samples[b])
        (b / "examples.json").unlink()
    scanned = {k: sections(render_html(board, rows, examples=k)) for k in (2, 3, K_MAX)}
    assert stored == scanned
    assert shown_docs(render_html(board, rows, examples=3), "m", "arc_challenge") == {
        "worst": [15, 19, 23],
        "best": [5, 11, 4],
    }
    section = next(s for s in stored[K_MAX] if s["label"] == "m")
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
    board = leaderboard.build("built by the caller", demo_rows(tmp_path))  # a job has built it: not built again
    page = write_report("p", home, tmp_path / "again", pngs=False, board=board).read_text(encoding="utf-8")
    assert "<h1>built by the caller</h1>" in page and not (tmp_path / "again" / "charts").exists()


def test_a_project_without_results_is_an_error(tmp_path):
    with pytest.raises(SpecError, match=r"project: no results for 'nothing' under .*; run a job first"):
        write_report("nothing", tmp_path / "home", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def resolved_flip(data: dict, flip: list[int]) -> dict:
    """A flip of the compare view as (doc, input, target, model output, baseline output) texts."""
    model, baseline = (data["compare"]["examples"][i] for i in flip)
    texts = data["texts"]
    return {"doc": model["doc"], "input": texts[model["input"]], "target": texts[model["target"]],
            "model": texts[model["output"]], "baseline": texts[baseline["output"]]}  # fmt: skip


def test_the_compare_view_holds_each_pairs_comparison(tmp_path):
    rows = paired_rows(tmp_path)
    data = drilldown(render_html(leaderboard.build("p", rows), rows))
    names, pairs = data["compare"]["models"], data["compare"]["pairs"]
    assert names == ["strong", "close", "weak"] and sorted(pairs) == ["0,1", "0,2", "1,0", "1,2", "2,0", "2,1"]
    for key, pair in pairs.items():  # both orders: the one computed and its mirror image
        i, j = map(int, key.split(","))
        expected = compare.compare(rows, names[i], names[j]).as_dict()
        assert pair["overall"] == {k: expected["overall"][k] for k in ("delta", "ci_low", "ci_high", "p_value")}
        assert pair["not_compared"] == {}
        for shown, full in zip(pair["benchmarks"], expected["benchmarks"], strict=True):
            assert {k: shown[k] for k in report.COMPARED} == {k: full[k] for k in report.COMPARED}
            for side in ("up", "down"):
                docs = [data["compare"]["examples"][m]["doc"] for m, _ in shown[side]]
                flipped = [doc for _, doc in full[f"flipped_{side}"]]
                assert len(docs) == min(FLIPS_SHOWN, len(flipped)) and set(docs) <= set(flipped)
                if i < j:  # computed in this order: the first flips, in the model's order
                    assert docs == flipped[:FLIPS_SHOWN]
    close_vs_strong = {r["benchmark"]: r for r in pairs["1,0"]["benchmarks"]}
    arc, math = close_vs_strong["arc_challenge"], close_vs_strong["gsm8k"]
    assert (arc["delta"], arc["flips_up"], arc["flips_down"], arc["method"]) == (-0.025, 1, 2, "mcnemar_exact")
    # each flip opens the example's input and target and both models' outputs (close answers 2 after the target
    # when wrong, strong 1 after)
    assert [resolved_flip(data, f) for f in arc["up"]] == [
        {
            "doc": 0,
            "input": "Question 0?\nAnswer:",
            "target": "A. choice A",
            "model": "A. choice A",
            "baseline": "B. choice B",
        }  # fmt: skip
    ]
    assert [resolved_flip(data, f) for f in arc["down"]] == [
        {
            "doc": d,
            "input": f"Question {d}?\nAnswer:",
            "target": f"{t}. choice {t}",
            "model": f"{m}. choice {m}",
            "baseline": f"{t}. choice {t}",
        }  # fmt: skip
        for d, t, m in [(1, "B", "D"), (2, "C", "A")]
    ]
    assert [resolved_flip(data, f) for f in math["up"] + math["down"]] == [
        {"doc": 4, "input": "Problem 4\nAnswer:", "target": "28", "model": "28", "baseline": "29"},
        {"doc": 3, "input": "Problem 3\nAnswer:", "target": "21", "model": "23", "baseline": "21"},
    ]


def test_the_compare_view_shows_the_first_flips_and_counts_all(tmp_path):
    rows = paired_rows(tmp_path)
    data = drilldown(render_html(leaderboard.build("p", rows), rows))
    arc = data["compare"]["pairs"]["0,2"]["benchmarks"][0]  # strong vs weak
    # weak is wrong on 30 examples, strong on 8 (6 of them among weak's)
    assert (arc["benchmark"], arc["flips_up"], arc["flips_down"], FLIPS_SHOWN) == ("arc_challenge", 24, 2, 5)
    assert [resolved_flip(data, f)["doc"] for f in arc["up"]] == [1, 2, 3, 6, 7]
    assert [resolved_flip(data, f)["doc"] for f in arc["down"]] == [0, 20]
    assert arc["p_adjusted"] < 0.001 and data["compare"]["pairs"]["0,2"]["overall"]["ci_low"] > 40
    examples, held = data["compare"]["examples"], {}  # a model's record of an example once, in however many pairs
    for key, pair in data["compare"]["pairs"].items():
        for r in pair["benchmarks"]:
            for flip in r["up"] + r["down"]:
                for model, index in zip(map(int, key.split(",")), flip, strict=True):
                    held.setdefault((model, r["benchmark"], examples[index]["doc"]), set()).add(index)
    assert sorted(i for indexes in held.values() for i in indexes) == list(range(len(examples)))


def test_pairs_that_cannot_be_compared_say_why(tmp_path):
    rows = paired_rows(tmp_path)
    other = row(tmp_path, "strong", "arc_challenge", 0.5, settings_hash="h20", settings={"limit": 20})
    data = comparisons(render_html(leaderboard.build("p", [*rows, other]), [*rows, other]))
    assert data["models"] == ["strong [settings h]", "close [settings h]", "weak [settings h]", "strong [limit=20]"]
    assert (
        data["pairs"]["0,3"]["error"]
        == data["pairs"]["3,0"]["error"]
        == (
            "results with different score-relevant settings cannot be paired: "
            "limit None (strong [settings h]) vs 20 (strong [limit=20])"
        )
    )
    gone = [replace(r, bundle=str(tmp_path / "gone")) for r in rows]  # the bundles are elsewhere
    data = comparisons(render_html(leaderboard.build("p", gone), gone))
    assert data["pairs"]["0,1"]["error"].startswith("no benchmark could be compared:\n  - arc_challenge: 0 examples")
    no_statistics = comparisons(render_html(leaderboard.build("p", rows, intervals="none"), rows))
    assert (no_statistics["models"], no_statistics["pairs"], no_statistics["statistics"]) == ([], {}, False)


def test_the_compare_view_is_bounded(tmp_path):
    many = [replace(result_row(f"m{i:02d}", "b", 0.5), bundle=str(tmp_path)) for i in range(14)]
    data = comparisons(render_html(leaderboard.build("p", many), many))
    assert (data["models"], data["entries"], len(data["pairs"])) == ([f"m{i:02d}" for i in range(12)], 14, 132)
    for benchmarks, compared in [(22, 3), (23, 2), (66, 2), (67, 0)]:  # 3 pairs x 22 benchmarks: the budget
        wide = [result_row(f"m{i}", f"b{j:03d}", 0.5) for i in range(4) for j in range(benchmarks)]
        assert len(report._compared(leaderboard.build("p", wide))) == compared
    assert (report.COMPARE_MODELS, report.COMPARE_BUDGET) == (12, 66)
    data = comparisons(render_html(leaderboard.build("p", wide), wide))
    assert (data["models"], data["pairs"], data["statistics"], data["benchmarks"]) == ([], {}, True, 67)
