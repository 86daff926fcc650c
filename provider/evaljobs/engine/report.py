"""A project's leaderboard as one self-contained HTML page (works offline: no external URL, all CSS/JS/SVG
inline), plus PNG charts beside it.

The page holds the sortable leaderboard with each model's tier and the 95 % CIs, a bar chart per benchmark and of
the normalised average (the leaderboard's 95 % CIs as whiskers), a heat map models x benchmarks, the worst and
best examples of every (model, benchmark) result, a compare view of two models and what differs between
settings variants.

The compare view holds :func:`compare.compare` of every pair of the top ``COMPARE_MODELS`` entries that share
settings, on the rows the page shows, fewer entries when their pairs would take more than ``COMPARE_BUDGET``
benchmark comparisons (66: what every pair of 12 models takes on one benchmark). One costs ~10 ms of CPU here,
three quarters of it the exact McNemar MDE: 12 models x 100 benchmarks would take a minute, the budget 0.7-1 s
(the top pair on 100 benchmarks, ~0.9 s, would make a 100 x 100 page ~45 % slower). Each pair is computed
once; the reverse order is its mirror image (deltas and CIs negated, flips swapped: both tests are two-sided
and symmetric). Of each benchmark's flips the page holds ``FLIPS_SHOWN`` a direction with their texts, and the
counts of all; the texts are read from the bundles' ``samples.jsonl``, each bundle once.

Hand-written pieces, and why:
- the page's charts (per benchmark, the average, the heat map) are plain SVG ``<rect>`` elements: matplotlib
  takes ~0.35 s per SVG chart (the heat map ~0.8 s, and importing it ~0.6 s), so a 100-benchmark report would
  take 35 s instead of well under 2 s. The PNGs ``write_report`` writes are the same charts drawn by matplotlib.
- ~150 lines of JavaScript in the template: sorting the table (a sorting library would have to be vendored
  into the page to stay offline), the drill-down and the compare view. Their examples are JSON in the page, every
  distinct text stored once and turned into elements (as text nodes) when a result is chosen: pre-rendered,
  100 models x 100 benchmarks x 10 examples would be 100,000 hidden HTML blocks repeating the same prompts
  (~150 MB).

The drill-down's examples are ranked once, when a job writes a result bundle (``write_examples``): its
``examples.json`` holds the ``K_MAX`` worst and best records, already in the form the page shows, and their
count, so the page reads 20 small records a result instead of ranking every line of ``samples.jsonl``. A bundle without
that file (written by an older version) is scanned, streamed: only the k worst and k best records are ever held
(``heapq``).
"""

from __future__ import annotations

import gc
import heapq
import io
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from importlib import resources
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

from evaljobs.engine import compare, stats
from evaljobs.engine.errors import SpecError
from evaljobs.engine.leaderboard import Entry, Leaderboard, build
from evaljobs.engine.results import ResultRow, ResultsStore, slug, write_bytes, write_json, write_text

SHOWN_CHARS = 400  # longer prompts show their end (where the question is), other texts their start
HEATMAP_ANNOTATED_CELLS = 400  # above this many cells, values are only in the colours and the table
HEATMAP_COLORS = "viridis"
BAR_COLOR = "#4f6bed"
TEXT_FIELDS = ("input", "target", "output", "raw")  # an example's texts: stored once in the page
K_MAX = 5  # worst and best examples a bundle's examples.json keeps (what a page shows by default; more: a scan)
COMPARE_MODELS = 12  # the compare view holds every pair of up to this many top entries, and at most ...
COMPARE_BUDGET = COMPARE_MODELS * (COMPARE_MODELS - 1) // 2  # ... as many benchmark comparisons as they take on one
FLIPS_SHOWN = 5  # flipped examples a benchmark and direction the compare view shows with their texts

RowKey = tuple[str, str, str]  # (model, settings hash, benchmark)


@dataclass(frozen=True)
class Bar:
    """One bar of a chart: a model's value and, when known, its 95 % CI."""

    label: str
    value: float
    ci: tuple[float, float] | None = None


def render_html(board: Leaderboard, rows: list[ResultRow], *, examples: int = 5) -> str:
    """The report page: table, charts, heat map, per-example drill-down (``examples`` worst and best each),
    compare view."""
    from markupsafe import Markup

    by_key, texts = _by_key(rows), {}
    sections = _drilldowns(board, by_key, examples, texts)
    compared = _comparisons(board, by_key, texts)
    data = {"shown": SHOWN_CHARS, "sections": sections, "compare": compared, "texts": list(texts)}
    baselines, metrics = {r.benchmark: r.baseline for r in rows}, {r.benchmark: r.metric for r in rows}
    charts = [
        {"benchmark": b, "metric": metrics.get(b, ""), "svg": Markup(_bars_svg(bars, 1.0, baselines.get(b), 3))}
        for b in board.benchmarks
        for bars in [_benchmark_bars(board, b)]
    ]
    return _template().render(
        board=board,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        n_results=len(by_key),
        average_svg=Markup(_bars_svg(_average_bars(board), 100.0, None, 1, width=960.0)),
        charts=charts,
        heatmap_svg=Markup(_heatmap_svg(board)) if board.entries else "",
        drill_groups=[(label, list(group)) for label, group in groupby(sections, itemgetter("label"))],
        drilldown_json=Markup(_script_json(data)),
        settings=_settings_table(board),
        cell_texts=[_cell_texts(e) for e in board.entries],
        tier_tests=max(1, len(board.entries) - 1),
        tier_level=stats.ALPHA / max(1, len(board.entries) - 1),
    )


def write_examples(bundle: Path, records: Iterable[dict[str, Any]]) -> None:
    """Write ``bundle/examples.json``: the ``K_MAX`` worst and best of ``records`` (ranked as the drill-down
    ranks them) and their count, for the report to read instead of ``samples.jsonl``."""
    worst, best, count = _extremes(records, K_MAX)
    shown = {"count": count, "worst": [_shown(r) for r in worst], "best": [_shown(r) for r in best]}
    write_json(Path(bundle) / "examples.json", shown)


def write_report(
    project: str,
    results_home: Path,
    out_dir: Path,
    rows: list[ResultRow] | None = None,
    pngs: bool = True,
    *,
    board: Leaderboard | None = None,
) -> Path:
    """Write ``out_dir/index.html`` and, with ``pngs``, ``out_dir/charts/*.png`` for ``project`` (from
    ``rows``, by default the results store's, and ``board``, their leaderboard when the caller has built it: its
    tiers pair every bundle again); return the page's path.

    The PNGs take most of the time: ~0.1 s a chart, ~0.6 s with 100 models (~1 minute for 100 x 100), which
    is why jobs write the page alone (its charts are inline) and ``evaljobs report`` adds the PNGs."""
    home = Path(results_home)
    rows = ResultsStore(home).rows(project) if rows is None else rows
    if not rows:
        raise SpecError([f"project: no results for {project!r} under {home}; run a job first"])
    board = build(project, rows) if board is None else board
    index = Path(out_dir) / "index.html"
    write_text(index, render_html(board, rows))
    for name, figure in _figures(board, rows) if pngs else ():
        write_bytes(Path(out_dir) / "charts" / f"{name}.png", _png(figure))
    return index


# --- data -----------------------------------------------------------------------------------------------


def _by_key(rows: Iterable[ResultRow]) -> dict[RowKey, ResultRow]:
    """Rows by (model, settings hash, benchmark); rows come oldest first, so a newer one wins."""
    return {(r.model, r.settings_hash, r.benchmark): r for r in rows}


def _interval(entry: Entry, benchmark: str | None = None, normalised: bool = False) -> tuple[float, float] | None:
    """The leaderboard's 95 % CI of ``entry``'s score on ``benchmark`` (0-1; ``normalised``: 0-100), or of its
    normalised average without a benchmark; ``None`` when it has none. What the charts and the table show."""
    if benchmark is None:
        return entry.average_ci
    estimate = (entry.normalised_ci if normalised else entry.score_ci).get(benchmark)
    return None if estimate is None or estimate.ci_low is None else (estimate.ci_low, estimate.ci_high)


def _interval_text(entry: Entry, benchmark: str | None = None, normalised: bool = False, digits: int = 3) -> str:
    """The CI as "[low, high]", or "" without one."""
    ci = _interval(entry, benchmark, normalised)
    return "" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _cell_texts(entry: Entry) -> dict[str, str]:
    """What the table shows of an entry's CIs: its average's under "", and each benchmark cell's hover title
    (the score and the normalised score, each with its CI). Built here: 10,000 cells in Jinja take ~1 s."""
    texts = {"": _interval_text(entry, digits=1)}
    for b, score in entry.scores.items():
        ci, normalised = _interval_text(entry, b), _interval_text(entry, b, True, 1)
        texts[b] = f"{b}: {score:.3f}" + (f", 95 % CI {ci}" if ci else "") + f"; normalised {entry.normalised[b]:.1f}"
        texts[b] += f" {normalised}" if normalised else ""
    return texts


def _benchmark_bars(board: Leaderboard, benchmark: str) -> list[Bar]:
    """The models' scores on ``benchmark``, best first."""
    bars = [Bar(e.label, e.scores[benchmark], _interval(e, benchmark)) for e in board.entries if benchmark in e.scores]
    return sorted(bars, key=lambda bar: -bar.value)


def _average_bars(board: Leaderboard) -> list[Bar]:
    """The normalised averages, in rank order."""
    return [Bar(e.label, e.average, _interval(e)) for e in board.entries]


def _settings_table(board: Leaderboard) -> dict[str, Any]:
    """The settings whose values differ between the board's variants, one row per variant."""
    values = board.variants
    keys = sorted({k for s in values.values() for k in s})
    differing = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True) for s in values.values()}) > 1]
    labels = {e.settings_hash: e.variant for e in board.entries}
    rows = [
        {"variant": labels.get(h, h), "hash": h, "values": [_setting(s.get(k)) for k in differing]}
        for h, s in values.items()
    ]
    return {"keys": differing, "rows": rows}


def _setting(value: Any) -> str:
    return "default" if value is None else value if isinstance(value, str) else json.dumps(value)


# --- per-example drill-down ------------------------------------------------------------------------------


def _drilldowns(board: Leaderboard, by_key: dict[RowKey, ResultRow], k: int, texts: dict[str, int]) -> list[dict]:
    """Per (entry, benchmark) result, its ``k`` worst and ``k`` best examples; their texts are indexes into
    ``texts`` (each distinct text kept once)."""
    sections = []
    for entry in board.entries:
        for benchmark in board.benchmarks:
            row = by_key.get((entry.model, entry.settings_hash, benchmark))
            if row is None:
                continue
            worst, best, count = _examples(row.bundle, k)
            sections.append(
                {
                    "id": f"dd-{len(sections)}",
                    "label": entry.label,
                    "benchmark": benchmark,
                    "score": row.score,
                    "ci": _interval_text(entry, benchmark),
                    "samples": os.path.join(row.bundle, "samples.jsonl"),
                    "count": count,
                    "worst": [_example(r, texts) for r in worst],
                    "best": [_example(r, texts) for r in best],
                }
            )
    return sections


def _examples(bundle: str, k: int) -> tuple[list[dict], list[dict], int]:
    """A bundle's ``k`` worst and best examples as shown (:func:`_shown`) and its record count: from its
    ``examples.json`` or, without one (an older version's bundle) or for ``k`` above ``K_MAX``, by scanning its
    ``samples.jsonl``. Plain string paths: pathlib costs more than the read for 10,000 small files."""
    if k <= K_MAX:
        try:
            with open(os.path.join(bundle, "examples.json"), encoding="utf-8") as stored:
                data = json.load(stored)
            return data["worst"][:k], data["best"][:k], data["count"]
        except FileNotFoundError:
            pass
    samples = Path(bundle) / "samples.jsonl"
    if not samples.is_file():
        return [], [], 0
    worst, best, count = _extremes(_records(samples), k)
    return [_shown(r) for r in worst], [_shown(r) for r in best], count


def _records(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSONL file, one at a time."""
    with path.open(encoding="utf-8") as lines:
        yield from (json.loads(line) for line in lines if line.strip())


def _extremes(records: Iterable[dict[str, Any]], k: int) -> tuple[list[dict], list[dict], int]:
    """The ``k`` lowest- and ``k`` highest-ranked of ``records`` and their count, in one pass.

    Heap entries end with the negated position: ties keep the earlier record, and records never compare."""
    worst: list[tuple] = []  # keys negated: the heap's smallest entry is the best of the kept worst ones
    best: list[tuple] = []
    count = 0
    for record in records:
        score, margin = _rank(record)
        count += 1
        if count <= k:
            heapq.heappush(worst, (-score, -margin, -count, record))
            heapq.heappush(best, (score, margin, -count, record))
        elif k:
            heapq.heappushpop(worst, (-score, -margin, -count, record))
            heapq.heappushpop(best, (score, margin, -count, record))
    return [e[-1] for e in sorted(worst, reverse=True)], [e[-1] for e in sorted(best, reverse=True)], count


def _rank(record: dict[str, Any]) -> tuple[float, float]:
    """(score, margin): the margin orders equal scores (a confident mistake is worse than a near miss)."""
    score = record.get("score")
    return float(score) if isinstance(score, int | float) else 0.0, _margin(record)


def _margin(record: dict[str, Any]) -> float:
    """Multiple choice: the correct choice's log-likelihood minus the best wrong one's; otherwise 0."""
    lls, target = record.get("loglikelihoods"), record.get("target")
    if not isinstance(lls, list) or not isinstance(target, int) or not 0 <= target < len(lls) or len(lls) < 2:
        return 0.0
    return lls[target] - max(lls[:target] + lls[target + 1 :])


def _shown(record: dict[str, Any]) -> dict[str, Any]:
    """One record as the page shows it, its texts in full (``examples.json`` stores examples so)."""
    choices = record.get("choices") if isinstance(record.get("choices"), list) else None
    target, output, raw = record.get("target"), record.get("output"), record.get("raw_output")
    score, margin = _rank(record)
    return {
        "doc": record.get("doc_id", "?"),
        "task": str(record.get("task", "")),
        "score": f"{score:g}",
        "passed": score > 0,
        "margin": f"{margin:+.2f}" if choices and record.get("loglikelihoods") else "",
        "input": str(record.get("input", "")),
        "target": _choice(choices, target),
        "output": _choice(choices, output),
        "raw": str(raw) if raw not in (None, output) else None,
    }


def _example(shown: dict[str, Any], texts: dict[str, int]) -> dict[str, Any]:
    """A shown example for the page's script: its texts become indexes into ``texts`` (each kept once)."""
    example = dict(shown)
    for field in TEXT_FIELDS:
        if (text := shown[field]) is not None:
            example[field] = texts.setdefault(text, len(texts))
    return example


def _choice(choices: list | None, value: Any) -> str:
    """A multiple-choice index as "B. <choice text>"; anything else as text."""
    if choices and isinstance(value, int) and 0 <= value < len(choices):
        return f"{chr(65 + value) if value < 26 else value}. {str(choices[value]).strip()}"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# --- compare view ----------------------------------------------------------------------------------------

COMPARED = ("benchmark", "n", "delta", "ci_low", "ci_high", "p_value", "p_adjusted", "method", "flips_up", "flips_down",
            "mde")  # fmt: skip


def _compared(board: Leaderboard) -> list[Entry]:
    """The top entries the compare view pairs: ``COMPARE_MODELS``, fewer when their pairs would take more than
    ``COMPARE_BUDGET`` benchmark comparisons (none below two); none when the board has no statistics (no CIs
    computed)."""
    if not any(e.score_ci for e in board.entries):
        return []
    n = min(COMPARE_MODELS, len(board.entries))
    while n > 1 and n * (n - 1) // 2 * len(board.benchmarks) > COMPARE_BUDGET:
        n -= 1
    return board.entries[:n] if n > 1 else []


def _comparisons(board: Leaderboard, by_key: dict[RowKey, ResultRow], texts: dict[str, int]) -> dict[str, Any]:
    """The compare view's data: :func:`compare.compare` of each pair of :func:`_compared` entries on their rows
    in ``by_key`` (key "i,j": model i vs baseline j; ``{"error": why}`` when they cannot be paired), and the
    flipped examples they show (``examples``: each model's record of a flipped example once, its texts indexes
    into ``texts``)."""
    entries = _compared(board)
    pairs: dict[str, dict[str, Any]] = {}
    wanted: dict[str, set[tuple]] = {}  # bundle -> the (task, doc_id) of its examples the flips show
    gc.freeze()  # statsmodels' Holm adjustment runs gc.collect() each call: ~0.2 s each over the objects until now
    try:
        for i, a in enumerate(entries):
            for j in range(i + 1, len(entries)):
                pair = _pair(board, a, entries[j], by_key, wanted)
                pairs[f"{i},{j}"], pairs[f"{j},{i}"] = pair, _mirrored(pair)
    finally:
        gc.unfreeze()
    records = {bundle: _records_of(bundle, keys) for bundle, keys in wanted.items()}
    examples: list[dict[str, Any]] = []
    index: dict[tuple, int | None] = {}

    def example(bundle: str, key: tuple) -> int | None:
        if (bundle, key) not in index:
            record = records[bundle].get(key)
            index[bundle, key] = None if record is None else len(examples)
            if record is not None:
                examples.append(_example(_shown(record), texts))
        return index[bundle, key]

    for pair in pairs.values():
        for result in pair.get("benchmarks", ()):
            for side in ("up", "down"):
                result[side] = [[example(bm, key), example(bb, key)] for bm, bb, key in result[side]]
    labels = [e.label for e in entries]
    return {"models": labels, "limit": COMPARE_MODELS, "budget": COMPARE_BUDGET, "shown": FLIPS_SHOWN,
            "entries": len(board.entries), "benchmarks": len(board.benchmarks), "statistics": any(e.score_ci for e in
            board.entries), "pairs": pairs, "examples": examples}  # fmt: skip


def _pair(
    board: Leaderboard, a: Entry, b: Entry, by_key: dict[RowKey, ResultRow], wanted: dict[str, set[tuple]]
) -> dict[str, Any]:
    """``a`` vs ``b`` as the page shows it; each benchmark's first ``FLIPS_SHOWN`` flips a direction as
    (model bundle, baseline bundle, (task, doc_id)), their keys added to ``wanted``."""
    if a.settings_hash != b.settings_hash:
        settings = board.variants
        why = compare.differences(
            settings.get(a.settings_hash, {}), settings.get(b.settings_hash, {}), a.label, b.label
        )
        return {"error": f"results with different score-relevant settings cannot be paired: {why}"}
    rows_a, rows_b = (
        {bench: row for bench in e.scores if (row := by_key.get((e.model, e.settings_hash, bench)))} for e in (a, b)
    )
    try:
        result = compare.compare([*rows_a.values(), *rows_b.values()], a.model, b.model, project=board.project)
    except compare.ComparisonError as exc:
        return {"error": str(exc)}
    found = result.as_dict()
    benchmarks = []
    for shown in found["benchmarks"]:
        bundles = rows_a[shown["benchmark"]].bundle, rows_b[shown["benchmark"]].bundle
        flips = {}
        for side in ("up", "down"):
            flips[side] = [(*bundles, tuple(key)) for key in shown[f"flipped_{side}"][:FLIPS_SHOWN]]
            for bundle in bundles:
                wanted.setdefault(bundle, set()).update(key for *_, key in flips[side])
        benchmarks.append({k: shown[k] for k in COMPARED} | flips)
    overall = {k: found["overall"][k] for k in ("delta", "ci_low", "ci_high", "p_value")}
    return {"benchmarks": benchmarks, "overall": overall, "not_compared": found["not_compared"]}


def _mirrored(pair: dict[str, Any]) -> dict[str, Any]:
    """The comparison in the other order: deltas and CIs negated, flips swapped (the p-values stay)."""
    if "error" in pair:
        return pair

    def negated(found: dict[str, Any]) -> dict[str, Any]:
        low, high = found["ci_low"], found["ci_high"]
        return found | {"delta": 0.0 - found["delta"], "ci_low": None if high is None else 0.0 - high,
                        "ci_high": None if low is None else 0.0 - low}  # 0.0 - x: never -0.0  # fmt: skip

    benchmarks = [
        negated(r)
        | {
            "flips_up": r["flips_down"],
            "flips_down": r["flips_up"],
            "up": [(bb, bm, key) for bm, bb, key in r["down"]],
            "down": [(bb, bm, key) for bm, bb, key in r["up"]],
        }
        for r in pair["benchmarks"]
    ]
    return {"benchmarks": benchmarks, "overall": negated(pair["overall"]), "not_compared": pair["not_compared"]}


def _records_of(bundle: str, keys: set[tuple]) -> dict[tuple, dict[str, Any]]:
    """The records of a bundle's ``samples.jsonl`` whose (task, doc_id) is in ``keys``, in one pass."""
    path = Path(bundle) / "samples.jsonl"
    if not keys or not path.is_file():
        return {}
    return {key: r for r in _records(path) if (key := (r.get("task"), r.get("doc_id"))) in keys}


# --- charts ----------------------------------------------------------------------------------------------


def _bars_svg(bars: list[Bar], scale: float, baseline: float | None, digits: int, width: float = 480.0) -> str:
    """A horizontal bar chart as inline SVG (0..``scale``), with 95 % CI whiskers and a dashed random baseline.

    Rows shrink with many models; below 12 px they lose their text (every bar keeps a hover title)."""
    left, right, top, axis = min(200.0, width * 0.38), 52.0, 8.0, 22.0
    plot = width - left - right
    step = max(8.0, min(24.0, 320.0 / max(len(bars), 1)))
    labelled = step >= 12
    height = top + step * len(bars) + axis

    def x(value: float) -> float:
        return left + plot * min(max(value / scale, 0.0), 1.0)

    parts = [f'<svg viewBox="0 0 {width:g} {height:g}" role="img">']
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        tx = x(tick * scale)
        parts.append(f'<line class="grid" x1="{tx:.1f}" x2="{tx:.1f}" y1="{top}" y2="{height - axis}"/>')
        parts.append(f'<text class="tick" x="{tx:.1f}" y="{height - 6:.1f}">{tick * scale:g}</text>')
    for i, bar in enumerate(bars):
        y, thick = top + i * step, step * 0.68
        mid = y + step / 2
        tip = f"{bar.label}: {bar.value:.{digits}f}"
        if bar.ci:
            tip += f", 95 % CI [{bar.ci[0]:.{digits}f}, {bar.ci[1]:.{digits}f}]"
        parts.append(f'<g class="row"><title>{escape(tip)}</title>')
        parts.append(f'<rect class="hit" x="0" y="{y:.1f}" width="{width:g}" height="{step:.1f}"/>')
        parts.append(
            f'<rect class="bar" x="{left:.1f}" y="{mid - thick / 2:.1f}" width="{x(bar.value) - left:.1f}"'
            f' height="{thick:.1f}" rx="2"/>'
        )
        end = x(bar.value)
        if bar.ci:
            lo, end = x(bar.ci[0]), max(end, x(bar.ci[1]))
            cap = thick / 4
            parts.append(
                f'<path class="err" d="M{lo:.1f} {mid:.1f}H{end:.1f}M{lo:.1f} {mid - cap:.1f}V{mid + cap:.1f}'
                f'M{end:.1f} {mid - cap:.1f}V{mid + cap:.1f}"/>'
            )
        if labelled:
            size = min(12.0, step * 0.55)
            name = _short(bar.label, int((left - 10) / (size * 0.62)))  # ~0.62 em per character
            parts.append(
                f'<text class="label" x="{left - 6:.1f}" y="{mid:.1f}" font-size="{size:.1f}">{escape(name)}</text>'
                f'<text class="value" x="{end + 4:.1f}" y="{mid:.1f}" font-size="{size:.1f}">'
                f"{bar.value:.{digits}f}</text>"
            )
        parts.append("</g>")
    if baseline:
        bx = x(baseline)
        parts.append(f'<line class="baseline" x1="{bx:.1f}" x2="{bx:.1f}" y1="{top - 4}" y2="{height - axis}">')
        parts.append(f"<title>random baseline: {baseline:g}</title></line>")
    parts.append("</svg>")
    return "".join(parts)


# viridis at 0, 0.1, ..., 1: the page's heat map interpolates these (matplotlib's colour map, for its PNG)
VIRIDIS = ("440154", "482475", "414487", "355f8d", "2a788e", "21918c", "22a884", "44bf70", "7ad151", "bddf26", "fde725")
MISSING_COLOR = "#e5e7eb"


def _heatmap_svg(board: Leaderboard) -> str:
    """Models (rank order) x benchmarks as inline SVG cells coloured by normalised score (0-100, viridis),
    values written in the cells when there are few, a hover title on each, missing results grey."""
    rows, columns = [_short(e.label, 36) for e in board.entries], [_short(b, 28) for b in board.benchmarks]
    small = len(rows) * len(columns) <= HEATMAP_ANNOTATED_CELLS
    cell = 34.0 if small else max(8.0, min(20.0, 900.0 / max(len(columns), 1)))
    font = 11.0 if small else max(6.0, min(10.0, cell * 0.8))
    left = 8 + 0.6 * font * max(map(len, rows))
    top = 8 + 0.6 * font * max(map(len, columns)) * 0.6  # column labels at 35 degrees
    width, height = left + cell * len(columns) + 70, top + cell * len(rows) + 8
    size = f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}"'  # shrinks, never grows
    parts = [f'<svg {size} role="img" font-size="{font:g}">']
    for j, name in enumerate(columns):
        x = left + (j + 0.5) * cell
        parts.append(
            f'<text x="{x:.1f}" y="{top - 4:.1f}" transform="rotate(-35 {x:.1f} {top - 4:.1f})">{escape(name)}</text>'
        )
    for i, (entry, name) in enumerate(zip(board.entries, rows, strict=True)):
        y = top + i * cell
        label = f'x="{left - 4:.1f}" y="{y + cell / 2:.1f}" text-anchor="end" dominant-baseline="middle"'
        parts.append(f"<text {label}>{escape(name)}</text>")
        for j, benchmark in enumerate(board.benchmarks):
            value, x = entry.normalised.get(benchmark), left + j * cell
            color = MISSING_COLOR if value is None else _viridis(value / 100)
            shown = "no result" if value is None else f"{value:.1f}"
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell:.1f}" height="{cell:.1f}" fill="{color}">'
                f"<title>{escape(entry.label)} / {escape(benchmark)}: {shown}</title></rect>"
            )
            if small and value is not None:
                ink = "white" if value < 60 else "black"
                parts.append(
                    f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2:.1f}" fill="{ink}" text-anchor="middle" '
                    f'dominant-baseline="middle">{value:.0f}</text>'
                )
    bar_x, bar_h = left + cell * len(columns) + 12, cell * len(rows)
    stops = "".join(f'<stop offset="{k / 10:g}" stop-color="#{c}"/>' for k, c in enumerate(VIRIDIS))
    parts.append(f'<defs><linearGradient id="viridis" x1="0" y1="1" x2="0" y2="0">{stops}</linearGradient></defs>')
    parts.append(f'<rect x="{bar_x:.1f}" y="{top:.1f}" width="10" height="{bar_h:.1f}" fill="url(#viridis)"/>')
    for tick in (0, 50, 100):
        ty = top + bar_h * (1 - tick / 100)
        parts.append(f'<text x="{bar_x + 14:.1f}" y="{ty:.1f}" dominant-baseline="middle">{tick}</text>')
    parts.append("<title>normalised score (0 = random baseline, 100 = perfect)</title></svg>")
    return "".join(parts)


def _viridis(fraction: float) -> str:
    """The viridis colour at ``fraction`` (0..1), interpolated between its deciles."""
    position = min(max(fraction, 0.0), 1.0) * 10
    low = min(int(position), 9)
    a, b = (tuple(int(VIRIDIS[i][k : k + 2], 16) for k in (0, 2, 4)) for i in (low, low + 1))
    t = position - low
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(a, b, strict=True))


def _heatmap_figure(board: Leaderboard):
    """Models (rank order) x benchmarks, normalised scores 0-100; missing results are grey."""
    import numpy as np
    from matplotlib import colormaps

    values = np.array([[e.normalised.get(b, np.nan) for b in board.benchmarks] for e in board.entries], dtype=float)
    rows, columns = [_short(e.label, 36) for e in board.entries], [_short(b, 28) for b in board.benchmarks]
    small = values.size <= HEATMAP_ANNOTATED_CELLS
    font = 9 if small else 6
    left, bottom = _text_inches(rows, font), 0.1 + 0.6 * _text_inches(columns, font)  # x labels at 35 degrees
    width = len(columns) * min(0.6, 20 / len(columns))
    height = max(1.4, len(rows) * min(0.32, 16 / len(rows)))  # the colour bar's label needs ~1.4 in
    figure, axes = _figure(left + width + 1.1, bottom + height + 0.15)  # right: the colour bar and its label
    ax = axes(left, bottom, width, height)
    cmap = colormaps[HEATMAP_COLORS].with_extremes(bad="#e5e7eb")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0, vmax=100, aspect="auto", interpolation="none")
    ax.set_xticks(range(len(columns)), columns, rotation=35, ha="right", rotation_mode="anchor", fontsize=font)
    ax.set_yticks(range(len(rows)), rows, fontsize=font)
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    if small:
        for (i, j), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color="white" if v < 60 else "black")
    figure.colorbar(image, cax=axes(left + width + 0.15, bottom, 0.15, height), label="normalised score")
    return figure


def _bar_figure(bars: list[Bar], title: str, scale: float, baseline: float | None):
    """The PNG twin of ``_bars_svg``."""
    labels = [_short(bar.label, 36) for bar in bars]
    left, height = _text_inches(labels, 8), 0.1 + 0.24 * len(bars)
    figure, axes = _figure(left + 5.6, height + 0.95)  # below: the axis; above: the title
    ax = axes(left, 0.45, 5.2, height)
    errors = None
    if any(bar.ci for bar in bars):  # matplotlib's asymmetric xerr: distances below and above; NaN: no whisker
        errors = [[max(0.0, b.value - b.ci[0]) if b.ci else math.nan for b in bars],
                  [max(0.0, b.ci[1] - b.value) if b.ci else math.nan for b in bars]]  # fmt: skip
    ax.barh(range(len(bars)), [bar.value for bar in bars], xerr=errors, color=BAR_COLOR, capsize=3, height=0.68)
    ax.set_yticks(range(len(bars)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, scale)
    ax.set_title(title, loc="left", fontsize=11)
    ax.spines[["top", "right"]].set_visible(False)
    if baseline:
        ax.axvline(baseline, color="#9ca3af", linestyle="--", linewidth=1, label="random")
        ax.legend(loc="lower right", fontsize=8, frameon=False)
    return figure


def _figure(width: float, height: float):
    """A ``width`` x ``height`` inches figure and a function adding axes at (left, bottom, width, height) inches.

    Margins come from the labels' lengths: constrained layout measures every tick label in an extra drawing
    pass (~2 s for a 100 x 100 heat map)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    return figure, lambda x, y, w, h: figure.add_axes((x / width, y / height, w / width, h / height))


def _text_inches(labels: list[str], font: float) -> float:
    """Room for the longest label at ``font`` points (~0.62 em a character), plus a gap."""
    return 0.2 + font * 0.62 / 72 * max(map(len, labels), default=0)


def _figures(board: Leaderboard, rows: list[ResultRow]) -> Iterable[tuple[str, Any]]:
    """(file stem, figure) of every PNG; the stems of the two summary charts cannot be a slug."""
    baselines = {r.benchmark: r.baseline for r in rows}
    yield "_average", _bar_figure(_average_bars(board), "Normalised average (0-100)", 100.0, None)
    yield "_heatmap", _heatmap_figure(board)
    for b in board.benchmarks:
        yield slug(b), _bar_figure(_benchmark_bars(board, b), b, 1.0, baselines.get(b))


def _png(figure) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=120)
    return out.getvalue()


def _script_json(data: Any) -> str:
    """JSON to embed in a ``<script>`` element: no "<", so no text can close the element."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _template():
    import jinja2

    source = (resources.files("evaljobs") / "data" / "report.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return env.from_string(source)
