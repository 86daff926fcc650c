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
    :param results_home: results store (default ``$EVALJOBS_HOME`` or ``~/.evaljobs``)
    :param deferrable: wait in the triggerer instead of a worker slot (default ``[operators] default_deferrable``)
    """

    template_fields: Sequence[str] = ("project", "model", "benchmarks", "baseline_model", "results_home")

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
        results_home: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.project, self.model, self.benchmarks = project, model, benchmarks
        self.min_average, self.max_rank = min_average, max_rank
        self.baseline_model, self.min_delta = baseline_model, min_delta
        self.mode, self.alpha, self.margin = mode, alpha, margin
        self.results_home = results_home
        self.deferrable = deferrable
        self._gate()  # refuses bad conditions when the DAG is parsed

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
        return PokeReturnValue(verdict.released, asdict(verdict))

    def execute(self, context: Any) -> dict[str, Any] | None:
        if not self.deferrable:
            return super().execute(context)
        first = self.poke(context)  # poke once: no deferral when the results are already there
        if first.is_done:
            return first.xcom_value
        from evaljobs.triggers.leaderboard import LeaderboardTrigger  # Airflow's trigger base: only when deferring

        self.defer(
            trigger=LeaderboardTrigger(self._gate().to_dict(), self._home(), self.poke_interval, self.timeout),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )
        return None

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        if not event or event.get("status") != "success" or "verdict" not in event:
            raise AirflowException(f"LeaderboardSensor: {(event or {}).get('message', 'no event from the trigger')}")
        self.log.info("leaderboard gate released: %s", event["verdict"]["reason"])
        return event["verdict"]
