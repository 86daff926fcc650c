"""The extra links' URLs, from summaries shaped as a job returns them (``JobResult.summary``)."""

from evaljobs.engine.tracking import TrackedRun
from evaljobs.operators.links import leaderboard_url, wandb_url


def summary(project: str, runs: dict[str, TrackedRun]) -> dict:
    """The parts of ``JobResult.summary()`` the links read."""
    return {
        "job_id": "manual__2026-12-02-evaluate-0",
        "project": project,
        "wandb_runs": {b: {"id": r.id, "offline": r.offline, "url": r.url} for b, r in runs.items()},
    }


def run(benchmark: str, url: str | None) -> TrackedRun:
    return TrackedRun(f"ev-{benchmark}", "evals", "team", url is None, None, url)


def test_one_online_run_links_to_it_several_to_their_group_offline_to_nothing():
    one = summary("team/evals", {"gsm8k": run("gsm8k", "https://wandb.ai/team/evals/runs/ev-gsm8k")})
    assert wandb_url(one) == "https://wandb.ai/team/evals/runs/ev-gsm8k"
    urls = {b: run(b, f"https://w.example.com/team/evals/runs/ev-{b}") for b in ("gsm8k", "arc_challenge")}
    assert wandb_url(summary("team/evals", urls)) == (
        "https://w.example.com/team/evals/groups/manual__2026-12-02-evaluate-0"
    )
    assert wandb_url(summary("quickstart", {"gsm8k": run("gsm8k", None)})) == ""
    assert wandb_url({}) == ""


def test_the_leaderboard_link_is_the_projects_page_under_the_api_servers_address():
    assert leaderboard_url({"project": "quickstart"}, "http://airflow.example.com:8080/") == (
        "http://airflow.example.com:8080/evaljobs/projects/quickstart/"
    )
    assert leaderboard_url({"project": "team/evals"}, None) == "/evaljobs/projects/team_evals/"
    assert leaderboard_url({"project": "../../etc"}, None) == "/evaljobs/projects/etc/"  # the file-safe name
    assert leaderboard_url({}, "http://a") == "" and leaderboard_url({"project": None}, None) == ""
