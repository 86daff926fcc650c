"""The ``evaljobs`` Airflow plugin (the ``airflow.plugins`` entry point): the leaderboard pages' app, mounted by
the API server, and their entry in the UI's navigation (an external view, shown inside the UI)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from evaljobs.plugins import PREFIX
from evaljobs.plugins.app import app


class EvaljobsPlugin(AirflowPlugin):
    name = "evaljobs"
    fastapi_apps = [{"app": app, "url_prefix": PREFIX, "name": "evaljobs leaderboards"}]
    external_views = [
        {
            "name": "Leaderboards",
            "href": PREFIX.lstrip("/") + "/",  # relative: right under a base URL with a path too
            "destination": "nav",
            "category": "browse",
            "url_route": "evaljobs-leaderboards",
        }
    ]
