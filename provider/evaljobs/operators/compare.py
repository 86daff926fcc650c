"""Compare two models of a project example by example: `evaljobs compare` as a task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.exceptions import AirflowException
from airflow.sdk import BaseOperator


class ModelComparisonOperator(BaseOperator):
    """Pair ``model``'s and ``baseline``'s examples on their common benchmarks (or ``benchmarks``) and return
    the comparison (:func:`evaljobs.engine.compare.compare`'s ``as_dict()``: per benchmark n, delta, 95 % CI,
    p-value raw and Holm-adjusted, method, flips; the normalised average's delta with its CI; the MDE), logging
    its table. Results with different score-relevant settings are refused, naming what differs.

    :param results_home: the results home, a folder or ``s3://bucket/prefix`` (default: ``$EVALJOBS_HOME``)
    :param discordance: the share of examples the models disagree on, for the MDE (default: the observed one)
    """

    template_fields: Sequence[str] = ("project", "model", "baseline", "benchmarks", "results_home")

    def __init__(
        self,
        *,
        project: str,
        model: str,
        baseline: str,
        benchmarks: Sequence[str] = (),
        results_home: str | None = None,
        discordance: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.project, self.model, self.baseline, self.benchmarks = project, model, baseline, benchmarks
        self.results_home, self.discordance = results_home, discordance

    def execute(self, context: Any) -> dict[str, Any]:
        from evaljobs.engine.preflight import engine_problem

        if problem := engine_problem():
            raise AirflowException(problem)
        from evaljobs.engine.compare import compare
        from evaljobs.engine.errors import EvalJobsError
        from evaljobs.engine.objectstore import project_rows
        from evaljobs.engine.spec import default_results_home

        rows = project_rows(self.results_home or default_results_home(), self.project)
        try:
            result = compare(rows, self.model, self.baseline, list(self.benchmarks), self.project, self.discordance)
        except EvalJobsError as exc:
            raise AirflowException(str(exc)) from None
        self.log.info("%s", result.to_text())
        return result.as_dict()
