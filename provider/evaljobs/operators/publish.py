"""Publish a project's leaderboard once its evaluations are done: the task downstream of mapped evaluations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.exceptions import AirflowException
from airflow.sdk import BaseOperator

from evaljobs.assets import emit_leaderboard_event, with_leaderboard_outlet
from evaljobs.operators.links import LeaderboardLink


class LeaderboardPublishOperator(BaseOperator):
    """Save the project's leaderboard (JSON/CSV), log it to the project's W&B leaderboard run and render its
    HTML report; return the leaderboard with the report's path (no secret). Each publication is an event of the
    project's :func:`~evaljobs.assets.leaderboard_asset` (``extra``: the row of the model evaluated last).

    Evaluations that run at once (mapped, or one pod each) set ``publish_leaderboard=False`` and this task
    publishes once after them, with every row. Jobs publishing at once take turns on the project's lock.

    :param project: the destination project
    :param enabled: False skips publishing (a form's "publish to leaderboard" box); templated strings
        ``"True"``/``"False"`` are read as booleans
    :param results_home: the results home, a folder or ``s3://bucket/prefix`` (default: ``$EVALJOBS_HOME``)
    :param wandb_conn_id: the ``wandb`` connection; without it the leaderboard run is written offline
    :param wandb_mode: ``auto`` (online with a key, else offline), ``online``, ``offline`` or ``disabled``;
        online, the W&B project's runs join the local results
    """

    template_fields: Sequence[str] = ("project", "enabled", "results_home", "wandb_mode")
    operator_extra_links = (LeaderboardLink(),)

    def __init__(
        self,
        *,
        project: str,
        enabled: bool | str = True,
        results_home: str | None = None,
        wandb_conn_id: str = "wandb_default",
        wandb_mode: str = "auto",
        **kwargs: Any,
    ) -> None:
        super().__init__(**with_leaderboard_outlet(kwargs))
        self.project, self.enabled, self.results_home = project, enabled, results_home
        self.wandb_conn_id, self.wandb_mode = wandb_conn_id, wandb_mode

    def execute(self, context: Any) -> dict[str, Any] | None:
        from evaljobs.engine.errors import EvalJobsError
        from evaljobs.engine.objectstore import home_of
        from evaljobs.engine.preflight import engine_problem
        from evaljobs.hooks.wandb import WandbHook

        if not switched_on(self.enabled):
            self.log.info("publishing is off for this run: the leaderboard of %s is left as it is", self.project)
            return None
        if problem := engine_problem():
            raise AirflowException(problem)
        from evaljobs.engine.job import publish

        home = home_of(self.results_home)  # None: $EVALJOBS_HOME
        try:
            target = WandbHook(self.wandb_conn_id).target(self.wandb_mode)
            board, report = publish(self.project, home, target, self.log.info)
        except EvalJobsError as exc:
            raise AirflowException(str(exc)) from None
        published = board.as_dict()
        emit_leaderboard_event(context, self.project, published)
        return published | {"report": str(report)}


def switched_on(value: Any) -> bool:
    """A boolean argument that may arrive templated: the strings ``"False"``, ``"0"``, ``"None"`` and ``""`` are off."""
    return str(value).lower() not in ("false", "0", "none", "")
