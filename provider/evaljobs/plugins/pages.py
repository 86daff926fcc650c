"""The HTML of the leaderboard pages (autoescaped Jinja; the report pages are the ones ``publish`` writes)."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any


def index_page(projects: list[dict[str, Any]], home: str) -> str:
    """Every published project's leaderboard, newest first, each linking to its report and files."""
    return _template().render(projects=projects, home=home, missing=None)


def missing_report_page(project: str) -> str:
    """What a project without a report shows: how to get one."""
    return _template().render(projects=[], home="", missing=project)


@cache
def _template():
    import jinja2

    source = (resources.files("evaljobs") / "data" / "leaderboards.html.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return env.from_string(source)
