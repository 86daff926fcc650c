"""A stand-in training DAG: "produces" a checkpoint (the prepared SmolLM2 folder) and announces it on the
``CHECKPOINTS`` Asset, with the checkpoint's location in the event's ``extra``; ``evaljobs_checkpoint`` runs
on that event and ``evaljobs_promote`` gates the promotion on its results."""

from __future__ import annotations

from airflow.sdk import Asset, Param, dag, task

# Training DAGs update this Asset; the event's extra["checkpoint"] is the new checkpoint's folder.
CHECKPOINTS = Asset("evaljobs://checkpoints/smollm2")


@dag(
    dag_id="example_training",
    schedule=None,
    catchup=False,
    tags=["evaljobs", "example"],
    params={
        "checkpoint": Param(None, type=["null", "string"], description="model folder; empty = the embedded SmolLM2")
    },
)
def example_training():
    @task(outlets=[CHECKPOINTS])
    def train(params: dict | None = None, outlet_events=None) -> str:
        from evaljobs.forms import embedded_model

        checkpoint = params["checkpoint"] or str(embedded_model())
        outlet_events[CHECKPOINTS].extra = {"checkpoint": checkpoint, "model": "smollm2-135m-instruct"}
        return checkpoint

    train()


example_training()
