"""The provider's Airflow plugin: the leaderboard pages inside Airflow's UI (see :mod:`.leaderboards`).

This package's ``__init__`` stays light (no FastAPI, no Airflow server code): operator links import the page
addresses from here on workers."""

from __future__ import annotations

PREFIX = "/evaljobs"  # where the API server mounts the pages


def project_page(project_slug: str) -> str:
    """The path of a project's report page (``project_slug``: the file-safe name its leaderboard is saved under)."""
    return f"{PREFIX}/projects/{project_slug}/"
