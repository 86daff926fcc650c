"""Evaluate a checkpoint: serve it once with vLLM, evaluate each benchmark in parallel (mapped tasks),
publish the project's leaderboard, and always stop the server.

Runs on every ``CHECKPOINTS`` Asset event (the checkpoint's folder is the event's ``extra["checkpoint"]``),
or from the UI form.
"""

from __future__ import annotations

from airflow.sdk import Asset, Param, dag, task

from evaljobs.forms import LIMIT_HELP, benchmark_choices, benchmark_labels
from evaljobs.operators.evaluate import WandbEvalOperator
from evaljobs.operators.publish import LeaderboardPublishOperator
from evaljobs.operators.serve import VLLMServeOperator, VLLMStopOperator

# Training DAGs update this Asset; the event's extra["checkpoint"] is the new checkpoint's folder.
CHECKPOINTS = Asset("evaljobs://checkpoints/smollm2")
CHOICES = benchmark_choices()

FORM = {
    "checkpoint": Param(
        None,
        type=["null", "string"],
        title="Checkpoint folder",
        description="empty: the checkpoint of the Asset event that triggered the run",
    ),
    "benchmarks": Param(
        ["gsm8k_local", "arc_challenge_local"],
        type="array",
        title="Benchmarks",
        items={"type": "string", "enum": CHOICES},
        examples=CHOICES,  # a multi-select in the form; the enum refuses other values
        values_display=benchmark_labels(CHOICES),
        minItems=1,
        uniqueItems=True,
    ),
    "limit": Param(20, type="integer", minimum=0, title="Examples per benchmark", description=LIMIT_HELP),
    "project": Param("checkpoints", type="string", pattern=r"^[A-Za-z0-9][\w.-]{0,127}$", title="Project"),
    "publish": Param(True, type="boolean", title="Publish to leaderboard"),
    "num_fewshot": Param(None, type=["null", "integer"], minimum=0, maximum=64, title="Few-shot examples"),
    "max_tokens": Param(None, type=["null", "integer"], minimum=1, maximum=65536, title="Max new tokens"),
    "temperature": Param(0.0, type="number", minimum=0, maximum=2, title="Temperature"),
}


@dag(
    dag_id="evaljobs_checkpoint",
    schedule=[CHECKPOINTS],
    catchup=False,
    tags=["evaljobs", "example"],
    params=FORM,
    render_template_as_native_obj=True,
)
def evaljobs_checkpoint():
    @task
    def resolve(params: dict | None = None, triggering_asset_events=None) -> dict:
        """The run's job: the form's values, with the checkpoint from the triggering Asset event if any."""
        checkpoint = params["checkpoint"]
        for events in (triggering_asset_events or {}).values():
            for event in events:
                checkpoint = event.extra.get("checkpoint", checkpoint)
        if not checkpoint:
            raise ValueError("checkpoint: give a model folder in the form, or trigger through the CHECKPOINTS Asset")
        settings = {
            k: params[k] for k in ("limit", "num_fewshot", "max_tokens", "temperature") if params[k] is not None
        }
        return {"checkpoint": checkpoint, "benchmarks": params["benchmarks"], "settings": settings}

    @task
    def selected(job: dict) -> list[str]:
        return job["benchmarks"]

    job = resolve()
    serve = VLLMServeOperator(task_id="serve", checkpoint="{{ ti.xcom_pull('resolve')['checkpoint'] }}")
    scores = WandbEvalOperator.partial(
        task_id="evaluate",
        server=serve.output,
        project="{{ params.project }}",
        settings="{{ ti.xcom_pull('resolve')['settings'] }}",
        publish_leaderboard=False,  # the mapped tasks run at once: the leaderboard is published once, below
    ).expand(benchmarks=selected(job))

    publish = LeaderboardPublishOperator(
        task_id="publish", project="{{ params.project }}", enabled="{{ params.publish }}"
    )

    (
        job
        >> serve
        >> scores
        >> publish
        >> VLLMStopOperator(task_id="stop", server=serve.output).as_teardown(setups=serve)
    )


evaljobs_checkpoint()
