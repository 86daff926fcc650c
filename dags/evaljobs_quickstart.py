"""Quickstart: serve the embedded SmolLM2-135M-Instruct with a local vLLM, evaluate it on GSM8K, ARC-Challenge
and one MMLU subject, publish the project's leaderboard and report, and always stop the server.

With ``EVALJOBS_DATA_ROOT`` set (``make quickstart`` points it at ../shared/benchdata) the benchmarks run
over those local rows; otherwise the catalog's hub-backed lm-eval tasks are used. Trigger it from the UI
form to pick another checkpoint, benchmarks, sample limit or project.
"""

from __future__ import annotations

import os

from airflow.sdk import Param, dag

from evaljobs.forms import LIMIT_HELP, benchmark_choices, benchmark_labels, embedded_model
from evaljobs.operators.evaluate import WandbEvalOperator
from evaljobs.operators.publish import LeaderboardPublishOperator
from evaljobs.operators.serve import VLLMServeOperator, VLLMStopOperator

LOCAL_BENCHMARKS = ["gsm8k_local", "arc_challenge_local", "mmlu_marketing_local"]
HUB_BENCHMARKS = ["gsm8k", "arc_challenge", "mmlu_marketing"]
CHOICES = benchmark_choices()


@dag(
    dag_id="evaljobs_quickstart",
    schedule=None,
    catchup=False,
    tags=["evaljobs", "example"],
    render_template_as_native_obj=True,
    params={
        "checkpoint": Param(
            None,
            type=["null", "string"],
            title="Checkpoint",
            description="model folder, W&B artifact or HF repo; empty = the embedded SmolLM2",
        ),
        "benchmarks": Param(
            LOCAL_BENCHMARKS if os.environ.get("EVALJOBS_DATA_ROOT") else HUB_BENCHMARKS,
            type="array",
            title="Benchmarks",
            examples=CHOICES,  # the form's multi-select: what this installation can run
            values_display=benchmark_labels(CHOICES),
            minItems=1,
            description="catalog names or custom .yaml paths",
        ),
        "limit": Param(40, type="integer", minimum=0, title="Examples per benchmark", description=LIMIT_HELP),
        "project": Param(
            "quickstart",
            type="string",
            pattern=r"^[A-Za-z0-9][\w.-]{0,127}$",
            title="Project",
            description="the leaderboard the results join",
        ),
        "publish": Param(
            True, type="boolean", title="Publish to leaderboard", description="the leaderboard, its W&B run, the report"
        ),
        "wandb_mode": Param(
            "auto",
            enum=["auto", "online", "offline", "disabled"],
            title="W&B mode",
            description="auto: online with the wandb_default connection's key, else offline runs in the results home",
        ),
    },
)
def evaljobs_quickstart():
    serve = VLLMServeOperator(
        task_id="serve", checkpoint=f"{{{{ params.checkpoint or '{embedded_model()}' }}}}", evaluations=["evaluate"]
    )
    evaluate = WandbEvalOperator(
        task_id="evaluate",
        server=serve.output,
        benchmarks="{{ params.benchmarks }}",
        project="{{ params.project }}",
        settings={"limit": "{{ params.limit }}"},
        wandb_mode="{{ params.wandb_mode }}",
        publish_leaderboard=False,  # published once, below
    )
    publish = LeaderboardPublishOperator(
        task_id="publish",
        project="{{ params.project }}",
        enabled="{{ params.publish }}",
        wandb_mode="{{ params.wandb_mode }}",
    )
    serve >> evaluate >> publish >> VLLMStopOperator(task_id="stop", server=serve.output).as_teardown(setups=serve)


evaljobs_quickstart()
