"""The HTML report in a real headless Chromium (Debian's, driven by its chromedriver; `make setup` installs both).

The screenshot lands in $EVALJOBS_TEST_OUTPUT (default <repo>/.test-output/) for a person to look at.
"""

import os
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from evaljobs.engine.report import write_report
from evaljobs.engine.results import ResultsStore
from tests.engine.test_report import LONG_PROMPT, demo_rows

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
OUTPUT = Path(os.environ.get("EVALJOBS_TEST_OUTPUT") or Path(__file__).resolve().parents[1] / ".test-output")
RANKED = ["gemma-2-2b", "llama-3.2-1b", "qwen2.5-0.5b", "smollm2-135m", "phi-3-mini"]


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM.is_file() and CHROMEDRIVER.is_file(), "Chromium and chromedriver are missing: run `make setup`"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: selenium-manager is never run, so nothing is downloaded.
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, tmp_path_factory):
    """The demo project's report, loaded; console messages of the load are kept in ``browser.load_log``."""
    tmp = tmp_path_factory.mktemp("report")
    store = ResultsStore(tmp / "home")
    for row in demo_rows(tmp):
        store.record(row)
    index = write_report("p", tmp / "home", tmp / "out")
    browser.get(index.as_uri())
    browser.load_log = browser.get_log("browser")
    return browser


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
