"""What a person sees in Airflow's UI: headless Chromium (Debian's, as the report's browser test drives it) against
`airflow standalone` started here. Every example DAG's trigger form opens valid, its benchmarks a pick-list; the
quickstart, triggered from its form with two benchmarks picked, runs to success (seen through the REST API and
its task log); the evaluation's "Leaderboard" link opens the project's report, and the Leaderboards page, opened
from the navigation, shows the quickstart's project with the scores the run returned and leads to the report.

Screenshots land in $EVALJOBS_TEST_OUTPUT (default <repo>/.test-output/), named ``ui-*.png``."""

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from evaljobs.engine.serving import group_alive
from evaljobs.forms import benchmark_choices, generative_choices
from tests.test_report_browser import OUTPUT, browser  # noqa: F401  (the Chromium fixture)
from tests.test_standalone import Standalone

PICKED = ["arc_challenge_local", "mmlu_marketing_local"]
QUICKSTART_RUNS = "/api/v2/dags/evaljobs_quickstart/dagRuns"
# Each example DAG's form: the benchmarks it opens with and what its pick-list offers (None: no such field).
FORMS = {
    "evaljobs_quickstart": (["gsm8k_local", "arc_challenge_local", "mmlu_marketing_local"], benchmark_choices),
    "evaljobs_checkpoint": (["gsm8k_local", "arc_challenge_local"], benchmark_choices),
    "evaljobs_hosted": (["gsm8k"], generative_choices),
    "evaljobs_kubernetes": (["gsm8k", "arc_challenge"], benchmark_choices),
    "example_training": (None, None),
}


@pytest.fixture(scope="module")
def standalone(tmp_path_factory, data_root, model_dir):
    """Airflow with the example DAGs; the quickstart's default checkpoint (the embedded model under the results
    home) is the prepared SmolLM2, as `make` leaves it."""
    root = tmp_path_factory.mktemp("ui")
    embedded = root / "results" / "models" / "smollm2-135m-instruct"
    embedded.parent.mkdir(parents=True)
    embedded.symlink_to(model_dir)
    # Airflow's advice for a loaded machine (here: 2 cores shared with other test runs): a longer wait for the
    # execution API than its 5 s, or a task's first call can time out before the task starts.
    env = {"EVALJOBS_DATA_ROOT": str(data_root), "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60"}
    server = Standalone(root, env)
    server.wait_for(lambda: server.client.get("/api/v2/monitor/health").status_code == 200, 240, "the API server")
    for dag_id in [*FORMS, "evaljobs_promote"]:
        server.wait_for(lambda dag_id=dag_id: server.dag_ready(dag_id), 180, f"{dag_id} to be parsed")
    yield server
    server.stop()
    assert not group_alive(server.process.pid)


@pytest.fixture(scope="module")
def ui(browser, standalone):  # noqa: F811
    browser.implicitly_wait(15)
    return browser


def screenshot(driver, name: str) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(OUTPUT / f"ui-{name}.png"))


def open_form(driver, url: str, dag_id: str):
    """The DAG's page, then its Trigger button: the form's dialog."""
    driver.get(f"{url}/dags/{dag_id}")
    driver.find_element(By.CSS_SELECTOR, '[data-testid="trigger-dag-button"]').click()
    return driver.find_element(By.CSS_SELECTOR, '[data-testid="trigger-dag-submit"]')


def picked(driver) -> list[str]:
    field = driver.find_element(By.ID, "element_benchmarks")
    return [i.get_attribute("value") for i in field.find_elements(By.CSS_SELECTOR, 'input[name="element_benchmarks"]')]


def offered(driver) -> list[str]:
    """The pick-list's options (the ones not picked yet), by their labels; the list stays open."""
    driver.find_element(By.CSS_SELECTOR, '#element_benchmarks input[aria-autocomplete="list"]').click()
    return [o.text for o in driver.find_elements(By.CSS_SELECTOR, '[id^="react-select-"][id*="-option-"]')]


@pytest.mark.parametrize("dag_id", FORMS)
def test_every_form_opens_valid_with_its_benchmarks_a_pick_list(ui, standalone, dag_id):
    submit = open_form(ui, standalone.url, dag_id)
    defaults, choices = FORMS[dag_id]
    WebDriverWait(ui, 15).until(lambda _: submit.is_enabled())  # valid as it opens: Trigger is enabled
    assert "Run Parameters" in ui.find_element(By.TAG_NAME, "body").text
    if defaults is None:
        assert ui.find_elements(By.ID, "element_benchmarks") == [] and ui.find_element(By.ID, "element_checkpoint")
    else:
        assert picked(ui) == defaults
        assert ui.find_elements(By.CSS_SELECTOR, "textarea#element_benchmarks") == []  # not a free-text box
        labels = offered(ui)
        assert [label.split(" ", 1)[0] for label in labels] == [c for c in choices() if c not in defaults]
    screenshot(ui, f"form-{dag_id}")


def test_the_promotion_form_opens_valid(ui, standalone):
    """Its benchmarks name the rows to gate on (free names, not the catalog's pick-list)."""
    submit = open_form(ui, standalone.url, "evaljobs_promote")
    WebDriverWait(ui, 15).until(lambda _: submit.is_enabled())
    assert ui.find_element(By.ID, "element_model").get_attribute("value") == ""  # empty: the Asset event's model
    screenshot(ui, "form-evaljobs_promote")


def test_the_quickstart_triggered_from_its_form_runs_and_logs_its_scores(ui, standalone):
    submit = open_form(ui, standalone.url, "evaljobs_quickstart")
    field = ui.find_element(By.ID, "element_benchmarks")
    for remove in field.find_elements(By.CSS_SELECTOR, '[aria-label^="Remove "] [role="button"]')[::-1]:
        remove.click()
    assert picked(ui) == [""] and not submit.is_enabled()  # no benchmark: the form refuses to trigger
    box = field.find_element(By.CSS_SELECTOR, 'input[aria-autocomplete="list"]')
    for name in PICKED:
        box.send_keys(name)
        [option] = ui.find_elements(By.CSS_SELECTOR, '[id^="react-select-"][id*="-option-"]')
        assert option.text.startswith(f"{name} (")
        box.send_keys(Keys.ENTER)
    assert picked(ui) == PICKED
    limit = ui.find_element(
        By.XPATH,
        "//label[starts-with(normalize-space(), 'Examples per benchmark')]/ancestor::div[@role='group']//input",
    )
    limit.send_keys(Keys.CONTROL, "a")
    limit.send_keys("2")
    WebDriverWait(ui, 10).until(lambda _: submit.is_enabled())
    screenshot(ui, "quickstart-picked")
    submit.click()
    WebDriverWait(ui, 30).until(lambda d: not d.find_elements(By.CSS_SELECTOR, '[data-testid="trigger-dag-submit"]'))
    ui.get("about:blank")  # the DAG's page polls the API server while the run goes on

    runs = standalone.wait_for(lambda: standalone.client.get(QUICKSTART_RUNS).json()["dag_runs"], 180, "the run")
    conf = runs[0]["conf"]
    assert (conf["benchmarks"], conf["limit"], conf["checkpoint"], conf["project"]) == (PICKED, 2, None, "quickstart")
    run = standalone.wait_run("evaljobs_quickstart", seconds=600)
    assert run["state"] == "success", run
    task = f"/api/v2/dags/evaljobs_quickstart/dagRuns/{run['dag_run_id']}/taskInstances/evaluate"
    summary = standalone.client.get(f"{task}/xcomEntries/return_value").json()["value"]
    assert sorted(summary["scores"]) == sorted(PICKED)
    log = "\n".join(line.get("event", "") for line in standalone.client.get(f"{task}/logs/1").json()["content"])
    for name, score in summary["scores"].items():  # the scores lines, with the values the task returned
        assert f"{name}: {summary['metrics'][name]} = {score:.4f} on 2 examples" in log, log[-3000:]
    links = standalone.client.get(f"{task}/links").json()["extra_links"]
    assert links["Leaderboard"] == f"{standalone.url}/evaljobs/projects/quickstart/"
    assert not links["W&B runs"]  # offline runs: nothing to link to
    standalone.scores, standalone.run_id = summary["scores"], run["dag_run_id"]


def test_the_evaluations_task_page_links_to_the_projects_page(ui, standalone):
    ui.get(f"{standalone.url}/dags/evaljobs_quickstart/runs/{standalone.run_id}/tasks/evaluate/details")
    ui.find_element(By.LINK_TEXT, "Leaderboard")  # the links come after the page
    links = {a.text: a.get_attribute("href") for a in ui.find_elements(By.CSS_SELECTOR, "a.chakra-button[href]")}
    assert links.get("Leaderboard") == f"{standalone.url}/evaljobs/projects/quickstart/" and "W&B runs" not in links
    screenshot(ui, "task-links")
    ui.find_element(By.LINK_TEXT, "Leaderboard").click()
    WebDriverWait(ui, 15).until(lambda d: d.title == "quickstart · evaljobs report")


def test_the_leaderboards_page_from_the_navigation_shows_the_quickstarts_scores(ui, standalone):
    ui.get(standalone.url + "/")
    ui.find_element(By.CSS_SELECTOR, 'button[aria-label="Browse"]').click()
    [entry] = [item for item in ui.find_elements(By.CSS_SELECTOR, '[role="menuitem"]') if item.text == "Leaderboards"]
    entry.click()
    frame = ui.find_element(By.TAG_NAME, "iframe")
    assert frame.get_attribute("src") == f"{standalone.url}/evaljobs/"  # the page, inside the UI
    ui.switch_to.frame(frame)
    try:
        project = ui.find_element(By.CSS_SELECTOR, 'section.project[data-project="quickstart"]')
        assert project.find_element(By.TAG_NAME, "h2").text == "quickstart"
        [row] = project.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert row.find_element(By.CSS_SELECTOR, "td.model").text == "smollm2-135m-instruct"
        cells = {
            c.get_attribute("data-benchmark"): c.text.split("\n")[0]
            for c in row.find_elements(By.CSS_SELECTOR, "td.score")
        }
        assert cells == {name: f"{score:.3f}" for name, score in standalone.scores.items()}
        ui.switch_to.default_content()
        screenshot(ui, "leaderboards")
        ui.switch_to.frame(frame)
        project.find_element(By.CSS_SELECTOR, "a.report").click()  # opens in the frame
        WebDriverWait(ui, 15).until(
            lambda d: d.execute_script("return document.title") == "quickstart · evaljobs report"
        )
        assert [td.text for td in ui.find_elements(By.CSS_SELECTOR, "#leaderboard tbody td.model")] == [
            "smollm2-135m-instruct"
        ]
        assert ui.find_element(By.ID, "drilldown-select")  # the per-example drill-down
    finally:
        ui.switch_to.default_content()
    screenshot(ui, "report")
