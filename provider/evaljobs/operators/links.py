"""Extra links of the evaluation tasks, built from the task's own XCom return value (the secret-free summary),
never from a connection or a secret: the W&B run(s) of an evaluation and the project's leaderboard page."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink


def wandb_url(summary: dict[str, Any]) -> str:
    """The one online run of an evaluation's summary, or with several the job's group of runs; "" offline."""
    urls = [run["url"] for run in (summary.get("wandb_runs") or {}).values() if run.get("url")]
    if len(urls) == 1:
        return urls[0]
    if urls and summary.get("job_id") and "/runs/" in urls[0]:
        return f"{urls[0].rsplit('/runs/', 1)[0]}/groups/{summary['job_id']}"
    return ""


def leaderboard_url(summary: dict[str, Any], base_url: str | None) -> str:
    """The page of the summary's project in Airflow (under the API server's ``base_url``); "" without one."""
    from evaljobs.engine.results import slug
    from evaljobs.plugins import project_page

    project = summary.get("project")
    if not isinstance(project, str) or not project:
        return ""
    return (base_url or "").rstrip("/") + project_page(slug(project))


def _returned(ti_key: Any) -> dict[str, Any]:
    """The task's return value (read on the worker as the task ends: Airflow stores the links then)."""
    from airflow.sdk.execution_time.xcom import XCom

    value = XCom.get_value(ti_key=ti_key, key="return_value")
    return value if isinstance(value, dict) else {}


class WandbRunsLink(BaseOperatorLink):
    """The evaluation's W&B run, or with several benchmarks their group (the job); none when offline."""

    name = "W&B runs"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        return wandb_url(_returned(ti_key))


class LeaderboardLink(BaseOperatorLink):
    """The project's page in Airflow (its report: leaderboard, charts, per-example drill-down)."""

    name = "Leaderboard"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.sdk.configuration import conf

        return leaderboard_url(_returned(ti_key), conf.get("api", "base_url", fallback=None))
