"""The Airflow Assets of evaljobs, for DAG authors: schedule a DAG on a project's leaderboard.

Light on purpose (Airflow's SDK only): DAG files import it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import Asset, AssetAlias

# Evaluations name their project when they run (it is templated), so they declare this alias as their outlet
# and attach each event to the project's leaderboard Asset.
LEADERBOARDS = AssetAlias("evaljobs-leaderboards")


def leaderboard_asset(project: str) -> Asset:
    """The Asset of ``project``'s leaderboard, ``evaljobs://leaderboards/<project>``: it gets an event each time
    an evaluation publishes the leaderboard (``extra``: project, model, its scores, rank and average)."""
    return Asset(f"evaljobs://leaderboards/{quote(project, safe='/')}")


def leaderboard_event(project: str, board: dict[str, Any], model: str | None = None) -> dict[str, Any]:
    """The ``extra`` of a leaderboard event, from the leaderboard's ``as_dict()`` form: the best row of ``model``
    (default: the model evaluated last), with the number of rows ranked. Names and numbers only."""
    rows = board.get("rows", [])
    if model:
        mine = [r for r in rows if r["model"] == model]
    else:
        mine = sorted(rows, key=lambda r: r.get("evaluated_at") or "", reverse=True)
    row = mine[0] if mine else {}
    return {
        "project": project,
        "model": row.get("model", model),
        "scores": row.get("scores", {}),
        "rank": row.get("rank"),
        "average": row.get("average"),
        "rows": len(rows),
    }


def with_leaderboard_outlet(kwargs: dict[str, Any]) -> dict[str, Any]:
    """An operator's keyword arguments with :data:`LEADERBOARDS` among its ``outlets`` (once)."""
    outlets = list(kwargs.get("outlets") or [])
    return kwargs | {"outlets": outlets if LEADERBOARDS in outlets else [*outlets, LEADERBOARDS]}


def emit_leaderboard_event(context: Any, project: str, board: dict[str, Any], model: str | None = None) -> None:
    """Add the leaderboard event of ``project`` through the task's :data:`LEADERBOARDS` outlet."""
    extra = leaderboard_event(project, board, model)
    context["outlet_events"][LEADERBOARDS].add(leaderboard_asset(project), extra=extra)
