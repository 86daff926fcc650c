"""Quickstart: evaluate the embedded SmolLM2-135M-Instruct, served by a local vLLM, on GSM8K, ARC-Challenge
and one MMLU subject, and print the project's leaderboard.

With ``EVALJOBS_DATA_ROOT`` set (``make quickstart`` points it at ../shared/benchdata) the benchmarks run
over those local rows; otherwise the catalog's hub-backed lm-eval tasks are used. Trigger it from the UI
form to pick another checkpoint, benchmarks, sample limit or project.
"""

from __future__ import annotations

import os

from airflow.sdk import Param, dag, task

from evaljobs.engine.catalog import runnable_names

LOCAL_BENCHMARKS = ["gsm8k_local", "arc_challenge_local", "mmlu_marketing_local"]
HUB_BENCHMARKS = ["gsm8k", "arc_challenge", "mmlu_marketing"]
EMBEDDED_MODEL = "models/smollm2-135m-instruct"


@dag(
    dag_id="evaljobs_quickstart",
    schedule=None,
    catchup=False,
    tags=["evaljobs", "example"],
    params={
        "checkpoint": Param("", type="string", description="model folder; empty = the embedded SmolLM2"),
        "benchmarks": Param(
            [],
            type="array",
            examples=runnable_names(),  # the form's multi-select: what this installation can run
            description="catalog names or custom .yaml paths; empty = "
            "GSM8K, ARC-Challenge and MMLU marketing (local rows when EVALJOBS_DATA_ROOT is set)",
        ),
        "limit": Param(40, type="integer", minimum=0, description="examples per benchmark (0 = all)"),
        "project": Param("quickstart", type="string", description="destination project"),
        "publish": Param(True, type="boolean", description="update the leaderboard, its W&B run and the report"),
        "wandb_mode": Param(
            "auto",
            enum=["auto", "online", "offline", "disabled"],
            description="auto: online with the wandb_default connection's key, else offline runs in the results home",
        ),
    },
)
def evaljobs_quickstart():
    @task
    def evaluate(params: dict | None = None) -> dict:
        from evaljobs.engine.command import run_local
        from evaljobs.engine.spec import JobSpec, default_results_home
        from evaljobs.hooks.wandb import WandbHook

        home = default_results_home()
        spec = JobSpec.parse(
            {
                "model": {"checkpoint": params["checkpoint"] or str(home / EMBEDDED_MODEL)},
                "benchmarks": params["benchmarks"]
                or (LOCAL_BENCHMARKS if os.environ.get("EVALJOBS_DATA_ROOT") else HUB_BENCHMARKS),
                "settings": {"limit": params["limit"]},
                "destination": {
                    "project": params["project"],
                    "wandb": params["wandb_mode"],
                    "publish_leaderboard": params["publish"],
                },
            }
        )
        return run_local(spec, WandbHook().env(params["wandb_mode"]))

    evaluate()


evaljobs_quickstart()
