"""Promote a checkpoint once its evaluation is on the leaderboard and good enough: runs on the same
``CHECKPOINTS`` Asset event as ``evaljobs_checkpoint``, waits with ``LeaderboardSensor`` (deferred), then
records the promotion under the results home (``promotions.jsonl``)."""

from __future__ import annotations

from airflow.sdk import Asset, Param, dag, task

from evaljobs.sensors.leaderboard import LeaderboardSensor

# Training DAGs update this Asset; the event's extra["checkpoint"] is the new checkpoint's folder.
CHECKPOINTS = Asset("evaljobs://checkpoints/smollm2")


@dag(
    dag_id="evaljobs_promote",
    schedule=[CHECKPOINTS],
    catchup=False,
    tags=["evaljobs", "example"],
    params={
        "project": Param("checkpoints", type="string"),
        "model": Param("smollm2-135m-instruct", type="string", description="the leaderboard row to gate on"),
        "benchmarks": Param(["gsm8k_local", "arc_challenge_local"], type="array"),
        "min_average": Param(0.0, type="number", minimum=0, maximum=100, description="normalised, 0-100"),
    },
    render_template_as_native_obj=True,
)
def evaljobs_promote():
    gate = LeaderboardSensor(
        task_id="wait_for_results",
        project="{{ params.project }}",
        model="{{ params.model }}",
        benchmarks="{{ params.benchmarks }}",
        min_average=None,
        poke_interval=30,
        timeout=6 * 3600,
    )

    @task
    def promote(verdict: dict, params: dict | None = None) -> dict:
        import json
        from datetime import UTC, datetime

        from evaljobs.forms import results_home

        if verdict["average"] < params["min_average"]:
            raise ValueError(f"not promoted: average {verdict['average']:.2f} < min_average {params['min_average']}")
        record = {
            "model": params["model"],
            "project": params["project"],
            "average": verdict["average"],
            "rank": verdict["rank"],
            "promoted_at": datetime.now(UTC).isoformat(),
        }
        path = results_home() / "promotions.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        return record

    promote(gate.output)


evaljobs_promote()
