"""The leaderboard pages as a FastAPI app, mounted by Airflow's API server under :data:`evaljobs.plugins.PREFIX`.

Read-only (GET only), and behind Airflow's own authentication and authorization: every route first asks the
configured auth manager whether the caller (the UI's session cookie or a bearer token) may see the custom view
``evaljobs leaderboards``. Airflow's server modules are imported when a request comes, not when the plugin loads.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from evaljobs.plugins.pages import index_page, missing_report_page
from evaljobs.plugins.store import PublishedObjects, PublishedResults, published_results

RESOURCE = "evaljobs leaderboards"  # the custom view an auth manager grants (GET)


async def viewer(request: Request) -> None:
    """Refuse a caller who is not signed in (401) or may not see the leaderboards (403)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    user = await get_user(request, None, await bearer_scheme(request))
    if not get_auth_manager().is_authorized_custom_view(method="GET", resource_name=RESOURCE, user=user):
        raise HTTPException(status_code=403, detail=f"not allowed to see the {RESOURCE}")


app = FastAPI(
    title="evaljobs leaderboards", dependencies=[Depends(viewer)], docs_url=None, redoc_url=None, openapi_url=None
)


def published() -> PublishedResults | PublishedObjects:
    """The results home of this Airflow installation, as the pages read it: ``[evaljobs] results_home``
    (``AIRFLOW__EVALJOBS__RESULTS_HOME``: a folder or ``s3://bucket/prefix``), else ``$EVALJOBS_HOME``."""
    from airflow.configuration import conf

    from evaljobs.forms import results_home

    return published_results(conf.get("evaljobs", "results_home", fallback="") or results_home())


def summaries(results: PublishedResults | PublishedObjects) -> list[dict]:
    """Every published project's leaderboard with its URL name, latest result and report flag; newest first."""
    found = []
    for name in results.projects():
        board = results.leaderboard(name)
        if board is None:
            continue
        updated = max((row.get("evaluated_at", "") for row in board.get("rows", [])), default="")
        found.append(board | {"slug": name, "updated": updated, "has_report": results.has(name, "report")})
    return sorted(found, key=lambda board: board["updated"], reverse=True)


@app.get("/", response_class=HTMLResponse)
def index() -> HTMLResponse:
    results = published()
    return HTMLResponse(index_page(summaries(results), str(results.home)))


@app.get("/api/projects")
def projects() -> JSONResponse:
    return JSONResponse(summaries(published()))


@app.get("/projects/{project}/", response_class=HTMLResponse)
def report(project: str) -> HTMLResponse:
    """The project's HTML report as its last publication wrote it (table, charts, per-example drill-down)."""
    results = published()
    page = results.read(project, "report")
    if page is not None:
        return HTMLResponse(page)
    if results.leaderboard(project) is None:
        raise HTTPException(status_code=404, detail=f"no published project {project!r}")
    return HTMLResponse(missing_report_page(project), status_code=404)


@app.get("/projects/{project}/leaderboard.{kind}")
def leaderboard_file(project: str, kind: str) -> Response:
    """The leaderboard as ``publish`` saved it: ``json`` or ``csv``."""
    types = {"json": "application/json", "csv": "text/csv; charset=utf-8"}
    data = published().read(project, kind) if kind in types else None
    if data is None:
        raise HTTPException(status_code=404, detail=f"no {kind} leaderboard for {project!r}")
    return Response(data, media_type=types[kind])
