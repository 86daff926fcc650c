"""The leaderboard pages, served by a real `airflow api-server` (the plugin loaded from the provider's entry
point) with the simple auth manager's passwords on: refused without a session, shown with one; what the pages
show comes from leaderboards and reports written by the engine's own ``publish``."""

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from evaljobs.engine.job import publish
from evaljobs.engine.results import ResultsStore
from evaljobs.engine.serving import free_port, stop_group
from evaljobs.engine.tracking import WandbTarget
from evaljobs.plugins import project_page
from evaljobs.plugins.store import PublishedResults, valid
from tests import factories


def published_home(home: Path) -> Path:
    """Two published projects (one whose name needs a file-safe form) and one recorded but never published."""
    store = ResultsStore(home)
    results = [
        ("alpha", "model-a", "gsm8k", 0.62, 0.0),
        ("alpha", "model-a", "arc_challenge", 0.55, 0.25),
        ("alpha", "<b>model-b</b>", "gsm8k", 0.31, 0.0),
        ("team/evals", "model-c", "mmlu", 0.40, 0.25),
        ("private", "model-d", "gsm8k", 0.9, 0.0),
    ]
    for project, model, benchmark, score, baseline in results:
        store.record(factories.result_row(model, benchmark, score, baseline, project=project))
    for project in ("alpha", "team/evals"):
        publish(project, home, WandbTarget(mode="disabled"), log=lambda _: None)
    return home


def test_only_published_projects_are_read_and_no_name_escapes_the_home(tmp_path):
    results = PublishedResults(published_home(tmp_path / "home"))
    (tmp_path / "home" / "secret.json").write_text('{"x": 1}')
    assert results.projects() == ["alpha", "team_evals"]
    assert results.leaderboard("team_evals")["project"] == "team/evals"
    assert results.read("alpha", "report").startswith(b"<!DOCTYPE html>") and results.has("alpha", "report")
    assert not results.has("private", "json") and not results.has("../leaderboards/alpha", "json")
    for name in ("private", "..", "../secret", "..%2fsecret", "/etc/passwd", ".alpha", "alpha/..", "a\x00", ""):
        assert results.read(name, "json") is None, name
    assert [valid(n) for n in ("alpha", "team_evals", "v1.2-x", "..", "a..b", ".x", "a/b", "é")] == [
        True, True, True, False, False, False, False, True,
    ]  # fmt: skip
    assert project_page("team_evals") == "/evaljobs/projects/team_evals/"


class ApiServer:
    """`airflow api-server` on a free port, the simple auth manager with one admin whose password we set."""

    def __init__(self, root: Path, migrated_db: Path, results: Path):
        self.home, self.results = root / "airflow", results
        self.home.mkdir()
        shutil.copy(migrated_db, self.home / "airflow.db")
        self.password = secrets.token_hex(8)
        passwords = root / "passwords.json"
        passwords.write_text(json.dumps({"admin": self.password}))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")} | {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16),
            "AIRFLOW__API__BASE_URL": self.url,
            "EVALJOBS_HOME": str(results),
        }
        self.log = (root / "api-server.log").open("wb")
        airflow = str(Path(sys.executable).parent / "airflow")
        command = [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        self.process = subprocess.Popen(
            command, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + 120
        while not self.ready():
            assert self.process.poll() is None and time.monotonic() < deadline, f"no API server; see {self.log.name}"
            time.sleep(1)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def token(self) -> str:
        response = httpx.post(f"{self.url}/auth/token", json={"username": "admin", "password": self.password})
        assert response.status_code == 201, response.text
        return response.json()["access_token"]

    def stop(self) -> None:
        stop_group(self.process.pid, grace=20)
        self.process.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, migrated_db):
    root = tmp_path_factory.mktemp("api-server")
    running = ApiServer(root, migrated_db, published_home(root / "results"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token()}"}) as signed_in:
        yield signed_in


def test_without_a_session_every_page_is_refused(server):
    for path in (
        "/evaljobs/",
        "/evaljobs/api/projects",
        "/evaljobs/projects/alpha/",
        "/evaljobs/projects/alpha/leaderboard.csv",
    ):
        assert httpx.get(server.url + path).status_code == 401, path
    bad = httpx.get(server.url + "/evaljobs/", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 403


def test_the_navigation_entry_and_the_app_are_registered(client):
    [plugin] = [p for p in client.get("/api/v2/plugins").json()["plugins"] if p["name"] == "evaljobs"]
    assert [(v["name"], v["href"], v["destination"]) for v in plugin["external_views"]] == [
        ("Leaderboards", "evaljobs/", "nav")
    ]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/evaljobs"]


def test_the_index_lists_the_published_projects_with_their_scores(client):
    summaries = client.get("/evaljobs/api/projects").json()
    assert sorted(s["slug"] for s in summaries) == ["alpha", "team_evals"]
    alpha = next(s for s in summaries if s["slug"] == "alpha")
    assert [(r["rank"], r["model"]) for r in alpha["rows"]] == [(1, "model-a"), (2, "<b>model-b</b>")]
    assert alpha["has_report"] and alpha["rows"][0]["scores"] == {"arc_challenge": 0.55, "gsm8k": 0.62}
    page = client.get("/evaljobs/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert 'data-project="alpha"' in html and "<h2>team/evals</h2>" in html and "private" not in html
    assert "&lt;b&gt;model-b&lt;/b&gt;" in html and "<b>model-b</b>" not in html  # names are text, never markup
    assert '<td class="score" data-benchmark="gsm8k">0.620' in html
    assert 'href="projects/alpha/"' in html


def test_a_project_page_is_its_report_and_its_files_are_the_published_ones(client, server):
    report = client.get("/evaljobs/projects/alpha/")
    assert report.status_code == 200 and "<title>alpha · evaljobs report</title>" in report.text
    assert 'id="drilldown-select"' in report.text  # the report's per-example drill-down
    published = server.results / "leaderboards" / "team_evals.csv"
    assert client.get("/evaljobs/projects/team_evals/leaderboard.csv").text == published.read_text()
    assert client.get("/evaljobs/projects/alpha/leaderboard.json").json()["columns"] == ["arc_challenge", "gsm8k"]


@pytest.mark.parametrize(
    "path",
    [
        "/evaljobs/projects/private/",  # recorded, never published
        "/evaljobs/projects/nope/",
        "/evaljobs/projects/../leaderboards/alpha.json",
        "/evaljobs/projects/%2e%2e/",
        "/evaljobs/projects/..%2fleaderboards%2falpha/",
        "/evaljobs/projects/%2e%2e%2f%2e%2e%2fresults.sqlite/leaderboard.json",
        "/evaljobs/projects/.alpha/",
        "/evaljobs/projects/alpha/leaderboard.sqlite",
        "/evaljobs/projects/alpha/leaderboard.",
    ],
)
def test_names_and_paths_from_the_url_never_leave_the_published_files(client, path):
    response = client.get(path)
    assert response.status_code == 404, (path, response.status_code, response.text[:200])
    assert "model-d" not in response.text and "SQLite" not in response.text


def test_the_pages_are_read_only(client):
    assert client.post("/evaljobs/projects/alpha/", json={}).status_code == 405
    assert client.delete("/evaljobs/projects/alpha/leaderboard.json").status_code == 405
