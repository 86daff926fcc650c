"""The HTML report in a real headless Chromium (Debian's, driven by its chromedriver; `make setup` installs both).

The screenshots land in $EVALJOBS_TEST_OUTPUT (default <repo>/.test-output/) for a person to look at: report.png
(the demo project), report-statistics.png (three models with CIs, tiers and a comparison open) and
report-compare.png (its compare view).
"""

import os
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from evaljobs.engine import compare
from evaljobs.engine.report import write_report
from evaljobs.engine.results import ResultsStore
from tests.engine.test_report import LONG_PROMPT, demo_rows, paired_rows

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
OUTPUT = Path(os.environ.get("EVALJOBS_TEST_OUTPUT") or Path(__file__).resolve().parents[1] / ".test-output")
RANKED = ["gemma-2-2b", "llama-3.2-1b", "qwen2.5-0.5b", "smollm2-135m", "phi-3-mini"]


def chromium() -> webdriver.Chrome:
    assert CHROMIUM.is_file() and CHROMEDRIVER.is_file(), "Chromium and chromedriver are missing: run `make setup`"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium-manager is never run, so nothing is downloaded.
    return webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


def load(driver, tmp: Path, rows: list, pngs: bool = True):
    """``rows``' report, loaded; console messages of the load are kept in ``driver.load_log``."""
    store = ResultsStore(tmp / "home")
    for row in rows:
        store.record(row)
    driver.get(write_report("p", tmp / "home", tmp / "out", pngs=pngs).as_uri())
    driver.load_log = driver.get_log("browser")
    return driver


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory):
    """The demo project's report, loaded."""
    tmp = tmp_path_factory.mktemp("report")
    return load(browser, tmp, demo_rows(tmp))


@pytest.fixture(scope="module")
def statistics_page(tmp_path_factory):
    """The report of three models that differ example by example, in a browser of its own; ``.rows``: theirs."""
    tmp = tmp_path_factory.mktemp("statistics")
    driver = chromium()
    driver.rows = paired_rows(tmp)
    yield load(driver, tmp, driver.rows, pngs=False)
    driver.quit()


def models(driver) -> list[str]:
    return [td.text for td in driver.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr td.model")]


def test_the_table_sorts_by_any_column(page):
    assert models(page) == RANKED
    header = {th.text.strip(" ↕▲▼"): th for th in page.find_elements(By.CSS_SELECTOR, "#leaderboard thead th")}
    header["Model"].click()
    assert models(page) == sorted(RANKED)
    header["Model"].click()
    assert models(page) == sorted(RANKED, reverse=True)
    header["gsm8k"].click()  # numeric; phi-3-mini has no gsm8k result: last both ways
    assert models(page) == ["smollm2-135m", "qwen2.5-0.5b", "llama-3.2-1b", "gemma-2-2b", "phi-3-mini"]
    header["gsm8k"].click()
    assert models(page) == ["gemma-2-2b", "llama-3.2-1b", "qwen2.5-0.5b", "smollm2-135m", "phi-3-mini"]
    header["#"].click()
    assert models(page) == RANKED


def test_every_chart_and_the_heat_map_are_drawn(page):
    charts = page.find_elements(By.CSS_SELECTOR, ".chart")
    assert [c.get_attribute("data-benchmark") for c in charts] == [None, "arc_challenge", "gsm8k"]
    for chart in [*charts, page.find_element(By.CSS_SELECTOR, ".heatmap")]:
        svg = chart.find_element(By.TAG_NAME, "svg")
        box = page.execute_script("const r = arguments[0].getBoundingClientRect(); return [r.width, r.height]", svg)
        assert box[0] > 200 and box[1] > 80, (chart.get_attribute("data-benchmark"), box)
    bars = [len(c.find_elements(By.CSS_SELECTOR, "rect.bar")) for c in charts]
    assert bars == [5, 5, 4]
    widths = [float(r.get_attribute("width")) for r in charts[1].find_elements(By.CSS_SELECTOR, "rect.bar")]
    assert widths == sorted(widths, reverse=True) and widths[-1] > 0
    heatmap = page.find_element(By.CSS_SELECTOR, ".heatmap svg")
    assert len(heatmap.find_elements(By.TAG_NAME, "rect")) == 5 * 2 + 1  # a cell per model and benchmark, the scale
    assert "gemma-2-2b" in heatmap.text and "gsm8k" in heatmap.text


def test_the_drilldown_switches_sections(page):
    pick = Select(page.find_element(By.ID, "drilldown-select"))
    first = page.find_element(By.ID, "dd-0")
    assert first.is_displayed() and first.find_element(By.TAG_NAME, "h3").text == "gemma-2-2b · arc_challenge"
    # the worst example first: its long prompt shows its end; the full text is one click away
    worst = first.find_element(By.CSS_SELECTOR, "article.example")
    assert worst.find_element(By.CSS_SELECTOR, ".meta").text == "doc 1 · arc · score 0 · margin -2.00"
    shown, full = worst.find_elements(By.TAG_NAME, "pre")[:2]
    assert shown.text.startswith("…") and shown.text.endswith("Question 1?\nAnswer:") and not full.is_displayed()
    worst.find_element(By.TAG_NAME, "summary").click()
    assert full.is_displayed() and full.text == LONG_PROMPT.strip()
    pick.select_by_value("dd-3")
    other = page.find_element(By.ID, "dd-3")
    assert other.is_displayed() and not first.is_displayed()
    assert other.find_element(By.TAG_NAME, "h3").text == "llama-3.2-1b · gsm8k"
    assert "Is 1 < 2 && <b>3</b> > 2?" in other.text  # shown as text, not markup
    pick.select_by_value("dd-0")
    assert first.is_displayed() and not other.is_displayed()


def test_no_console_errors_and_a_screenshot(page):
    errors = [e for e in page.load_log + page.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.execute_script("window.scrollTo(0, 0)")
    page.set_window_size(1280, page.execute_script("return document.documentElement.scrollHeight") + 200)
    assert page.save_screenshot(str(OUTPUT / "report.png"))


def test_the_table_shows_tiers_and_confidence_intervals(statistics_page):
    rows = statistics_page.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")
    cells = [[td.text for td in row.find_elements(By.TAG_NAME, "td")][:5] for row in rows]
    assert [c[1:3] for c in cells] == [["1", "strong"], ["1", "close"], ["2", "weak"]]
    assert cells[0][4].split("\n") == ["74.2", "[63.4, 84.9]"]  # the average, its 95 % CI beneath
    # the line where tier 2 starts is drawn: a wider border above "weak" than above "close"
    borders = [statistics_page.execute_script("return getComputedStyle(arguments[0]).borderTopWidth", r.find_element(
        By.TAG_NAME, "td")) for r in rows]  # fmt: skip
    assert borders == ["0px", "0px", "2px"]
    whiskers = statistics_page.find_elements(By.CSS_SELECTOR, "#average-chart path.err")
    assert len(whiskers) == 3 and all(w.size["width"] > 20 for w in whiskers)


def test_the_compare_view_shows_a_pair_and_opens_its_flips(statistics_page):
    page = statistics_page
    model, baseline = (Select(page.find_element(By.ID, name)) for name in ("compare-model", "compare-baseline"))
    assert [o.text for o in model.options] == ["strong", "close", "weak"]
    assert (model.first_selected_option.text, baseline.first_selected_option.text) == ("strong", "close")
    model.select_by_visible_text("close")
    baseline.select_by_visible_text("strong")
    expected = compare.compare(page.rows, "close", "strong")
    o = expected.overall
    assert page.find_element(By.CSS_SELECTOR, "#comparison .overall").text == (
        f"Normalised average: {o['delta']:+.2f} points (close − strong), 95 % CI [{o['ci_low']:+.2f}, "
        f"{o['ci_high']:+.2f}], p = {o['p_value']:.3f}"
    )
    assert o["delta"] == pytest.approx(-5 / 3)  # one arc example in 40 fewer: 2.5 points of score, 3.33 normalised
    arc = expected.benchmarks[0]
    row = page.find_element(By.CSS_SELECTOR, '#comparison-table tr[data-benchmark="arc_challenge"]')
    assert [td.text for td in row.find_elements(By.TAG_NAME, "td")] == [
        "arc_challenge", "40", f"{100 * arc.delta:+.1f}", f"[{100 * arc.ci_low:+.1f}, {100 * arc.ci_high:+.1f}]",
        "1.000", "1.000", "mcnemar_exact", "1", "2", "–" if arc.mde is None else f"{100 * arc.mde:.1f}", "flips",
    ]  # fmt: skip
    assert arc.delta == pytest.approx(-0.025) and (arc.flips_up, arc.flips_down) == (1, 2)
    row.find_element(By.TAG_NAME, "button").click()
    flips = page.find_element(By.CSS_SELECTOR, "#comparison-table tr.flips")
    titles = [h.text for h in flips.find_elements(By.TAG_NAME, "h3")]
    assert titles == ["strong wrong → close right: 1", "strong right → close wrong: 2"]
    first = flips.find_element(By.CSS_SELECTOR, "details.flip")
    assert first.find_element(By.TAG_NAME, "summary").text == "doc 0 · arc · strong 0 → close 1"
    first.find_element(By.TAG_NAME, "summary").click()
    terms = [dt.text for dt in first.find_elements(By.TAG_NAME, "dt")]
    values = [dd.text for dd in first.find_elements(By.TAG_NAME, "dd")]
    assert dict(zip(terms, values, strict=True)) == {
        "input": "Question 0?\nAnswer:",
        "target": "A. choice A",
        "output · close": "A. choice A",
        "output · strong": "B. choice B",
    }
    assert first.find_element(By.TAG_NAME, "dl").is_displayed()
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.set_window_size(1280, page.execute_script("return document.documentElement.scrollHeight") + 200)
    assert page.save_screenshot(str(OUTPUT / "report-statistics.png"))
    assert page.find_element(By.ID, "compare").screenshot(str(OUTPUT / "report-compare.png"))
    baseline.select_by_visible_text("close")
    assert page.find_element(By.ID, "comparison").text == "Pick two different models."
    errors = [e for e in page.load_log + page.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
