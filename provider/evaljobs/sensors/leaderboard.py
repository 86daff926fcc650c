"""Wait until a project's leaderboard holds results for a model, optionally meeting a condition."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from airflow.exceptions import AirflowException
from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf


class LeaderboardSensor(BaseSensorOperator):
    """Gate a promotion on evaluation results.

    :param project: destination project of the evaluations
    :param model: leaderboard row (checkpoint or hosted model name)
    :param benchmarks: benchmarks that must have results (empty: every column of the leaderboard)
    :param min_average: least normalised average (0-100) over ``benchmarks``
    :param max_rank: worst acceptable rank
    :param baseline_model: a model to beat, by at least ``min_delta`` points of normalised average
    :param mode: ``threshold`` (point estimates) or ``statistical``: released only when the model is
        significantly better than ``baseline_model`` by more than ``min_delta`` (one-sided, ``alpha``) and no
        benchmark is significantly worse than ``-margin`` normalised points (Holm); see :mod:`evaljobs.engine.gate`
    :param alpha: the statistical mode's significance level
    :param margin: the statistical mode's non-inferiority margin per benchmark, in normalised points
    :param refuse_fast: fail as soon as the model's results are in and the gate refuses them, instead of waiting
        for newer results until ``timeout``
    :param results_home: results store, a folder or ``s3://bucket/prefix`` (default ``$EVALJOBS_HOME``)
    :param deferrable: wait in the triggerer instead of a worker slot (default ``[operators] default_deferrable``)
    """

    template_fields: Sequence[str] = (
        "project",
        "model",
        "benchmarks",
        "baseline_model",
        "mode",
        "min_average",
        "min_delta",
        "alpha",
        "margin",
        "results_home",
    )

    def __init__(
        self,
        *,
        project: str,
        model: str,
        benchmarks: Sequence[str] = (),
        min_average: float | None = None,
        max_rank: int | None = None,
        baseline_model: str | None = None,
        min_delta: float = 0.0,
        mode: str = "threshold",
        alpha: float = 0.05,
        margin: float = 5.0,
        refuse_fast: bool = False,
        results_home: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.project, self.model, self.benchmarks = project, model, benchmarks
        self.min_average, self.max_rank = min_average, max_rank
        self.baseline_model, self.min_delta = baseline_model, min_delta
        self.mode, self.alpha, self.margin = mode, alpha, margin
        self.refuse_fast, self.results_home = refuse_fast, results_home
        self.deferrable = deferrable
        if "{{" not in f"{mode}{baseline_model}{min_average}{max_rank}{alpha}{margin}":
            self._gate()  # refuses bad conditions when the DAG is parsed (templated ones when the task runs)

    def _gate(self):
        from evaljobs.engine.gate import Gate

        return Gate(
            self.project,
            self.model,
            tuple(self.benchmarks),
            self.min_average,
            self.max_rank,
            self.baseline_model,
            self.min_delta,
            self.mode,
            self.alpha,
            self.margin,
        )

    def _home(self) -> str:
        from evaljobs.engine.spec import default_results_home

        return str(self.results_home or default_results_home())

    def poke(self, context: Any) -> PokeReturnValue:
        from evaljobs.engine.gate import evaluate

        verdict = evaluate(self._gate(), self._home())
        self.log.info("leaderboard gate: %s", verdict.reason)
        if self.refuse_fast and verdict.decided and not verdict.released:
            raise AirflowException(f"leaderboard gate refused: {verdict.reason}")
        return PokeReturnValue(verdict.released, asdict(verdict))

    def execute(self, context: Any) -> dict[str, Any] | None:
        from evaljobs.engine.objectstore import project_rows
        from evaljobs.engine.plan import gate_warning

        if warning := gate_warning(self._gate(), project_rows(self._home(), self.project)):
            self.log.warning("leaderboard gate: %s", warning)
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)  # poke once: no deferral when the results are already there
        if first.is_done:
            return first.xcom_value
        from evaljobs.triggers.leaderboard import LeaderboardTrigger  # Airflow's trigger base: only when deferring

        self.defer(
            trigger=LeaderboardTrigger(
                self._gate().to_dict(), self._home(), self.poke_interval, self.timeout, self.refuse_fast
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )
        return None

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if event and event.get("status") == "refused":
            raise AirflowException(f"leaderboard gate refused: {event['verdict']['reason']}")
        if not event or event.get("status") != "success" or "verdict" not in event:
            raise AirflowException(f"LeaderboardSensor: {(event or {}).get('message', 'no event from the trigger')}")
        self.log.info("leaderboard gate released: %s", event["verdict"]["reason"])
        return event["verdict"]
