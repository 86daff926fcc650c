"""Promote a checkpoint when the evidence says it is better: runs each time the ``checkpoints`` project's
leaderboard is published (its Asset, ``evaljobs://leaderboards/checkpoints``), gates the model that was just
evaluated with ``LeaderboardSensor`` (deferred) and records the promotion under the results home
(``promotions.jsonl``), with the numbers the verdict rests on.

With a baseline model (the one in production), the gate is statistical: released only when the paired
comparison on the same examples shows the new model better by more than ``min_delta`` points of normalised
average (one-sided, ``alpha``) and no benchmark significantly worse than ``-margin`` points (Holm). Without
one (the first checkpoint), it checks ``min_average``.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from evaljobs.assets import leaderboard_asset
from evaljobs.forms import benchmark_choices, benchmark_labels
from evaljobs.sensors.leaderboard import LeaderboardSensor

PROJECT = "checkpoints"  # the project evaljobs_checkpoint publishes


@dag(
    dag_id="evaljobs_promote",
    schedule=[leaderboard_asset(PROJECT)],
    catchup=False,
    tags=["evaljobs", "example"],
    params={
        "project": Param(PROJECT, type="string", title="Project"),
        "model": Param(
            None,
            type=["null", "string"],
            title="Model",
            description="the leaderboard row to gate on; empty: the model of the leaderboard event",
        ),
        "benchmarks": Param(
            ["gsm8k_local", "arc_challenge_local"],
            type="array",
            title="Benchmarks",
            examples=benchmark_choices(),  # a multi-select of the catalog; a project's custom names pass too
            values_display=benchmark_labels(benchmark_choices()),
            minItems=1,
            description="the leaderboard columns the gate compares",
        ),
        "baseline_model": Param(
            None,
            type=["null", "string"],
            title="Baseline model",
            description="the model in production; set: a statistical gate against it (paired, on the same examples)",
        ),
        "min_delta": Param(0.0, type="number", minimum=0, maximum=100, title="Least gain (normalised points)"),
        "alpha": Param(0.05, type="number", exclusiveMinimum=0, maximum=0.2, title="Significance level"),
        "margin": Param(
            5.0, type="number", minimum=0, maximum=100, title="Non-inferiority margin per benchmark (points)"
        ),
        "min_average": Param(
            0.0, type="number", minimum=0, maximum=100, title="Least average without a baseline (normalised)"
        ),
    },
    render_template_as_native_obj=True,
)
def evaljobs_promote():
    @task
    def candidate(params: dict | None = None, triggering_asset_events=None) -> str:
        """The model to gate: the form's, else the one whose evaluation published the leaderboard."""
        model = params["model"]
        for events in (triggering_asset_events or {}).values():
            for event in events:
                model = model or event.extra.get("model")
        if not model:
            raise ValueError("no model to gate: set the form's model (no leaderboard event triggered this run)")
        return model

    model = candidate()
    gate = LeaderboardSensor(
        task_id="wait_for_results",
        project="{{ params.project }}",
        model=model,
        benchmarks="{{ params.benchmarks }}",
        baseline_model="{{ params.baseline_model }}",
        mode="{{ 'statistical' if params.baseline_model else 'threshold' }}",
        min_delta="{{ params.min_delta }}",
        alpha="{{ params.alpha }}",
        margin="{{ params.margin }}",
        min_average="{{ None if params.baseline_model else params.min_average }}",
        refuse_fast=True,  # a refusal of complete results fails the run with its reason, at once
        poke_interval=30,
        timeout=6 * 3600,
    )
    model >> gate

    @task
    def promote(verdict: dict, model: str, params: dict | None = None) -> dict:
        import json
        from datetime import UTC, datetime

        from evaljobs.forms import results_home

        record = {
            "model": model,
            "project": params["project"],
            "average": verdict["average"],
            "rank": verdict["rank"],
            "reason": verdict["reason"],
            "evidence": verdict.get("evidence") or {},
            "promoted_at": datetime.now(UTC).isoformat(),
        }
        path = results_home() / "promotions.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        return record

    promote(gate.output, model)


evaljobs_promote()
