"""Evaluate a checkpoint on a GPU Kubernetes cluster: one pod per benchmark, all in parallel, each with vLLM as
a native sidecar on its own GPUs; then publish the project's leaderboard.

Cluster setup (namespace, Secrets, the model PVC, GPU node pool) is in docs/kubernetes.md. Airflow
reaches the cluster through the ``kubernetes_default`` connection, or its in-cluster service account.

Which mode: every pod here loads the model again. For B benchmarks that is B x GPUs x (load + evaluation)
GPU-hours, finished in the time of one; a shared server (``VLLMServeOperator(execution_mode="kubernetes")``)
loads once: GPUs x (load + B x evaluation), finished after all of them. With the figures of
``bench/cost_model.py`` (7B, 1 GPU, ~105 s to load, ~2 min a 5,000-request benchmark) pods cost 1.7x the GPU-hours
at 8 benchmarks; for a 70B on 2 GPUs 1.2x, but finish in 13 minutes instead of 1.4 hours. Pick pods when time to
result matters and GPUs are free; a shared server when GPUs are scarce or loading rivals a benchmark's run.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from evaljobs.forms import LIMIT_HELP, benchmark_choices, benchmark_labels
from evaljobs.operators.pod import WandbEvalPodOperator
from evaljobs.operators.publish import LeaderboardPublishOperator

CLUSTER = {
    "namespace": "evaljobs",
    "service_account": "evaljobs",
    # team secret name -> Kubernetes Secret (key = the name): pods get references, never values
    "secrets": {"WANDB_API_KEY": "evaljobs-secrets", "HF_TOKEN": "evaljobs-secrets"},
    "model_volume_claim": "models",  # folder checkpoints live on it, under /models
    "node_selector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}
CHOICES = benchmark_choices()
GPUS = 1  # per pod: 1 or 2 (tensor parallel); a model over 86 GB with context is refused before submission

FORM = {
    "checkpoint": Param(
        "my-team/models/my-model:latest",
        type="string",
        title="Checkpoint",
        description="a W&B model artifact entity/project/name:alias, or a folder under /models on the model PVC",
    ),
    "benchmarks": Param(
        ["gsm8k", "arc_challenge"],
        type="array",
        title="Benchmarks",
        items={"type": "string", "enum": CHOICES},
        examples=CHOICES,  # a multi-select in the form; the enum refuses other values
        values_display=benchmark_labels(CHOICES),
        minItems=1,
        uniqueItems=True,
    ),
    "limit": Param(0, type="integer", minimum=0, title="Examples per benchmark", description=LIMIT_HELP),
    "project": Param("my-team/evaluations", type="string", title="W&B project (entity/project)"),
    "publish": Param(True, type="boolean", title="Publish to leaderboard"),
}


@dag(
    dag_id="evaljobs_kubernetes",
    schedule=None,
    catchup=False,
    tags=["evaljobs", "example", "kubernetes"],
    params=FORM,
    render_template_as_native_obj=True,
)
def evaljobs_kubernetes():
    @task
    def selected(params: dict | None = None) -> list[str]:
        return params["benchmarks"]

    # Each pod runs as its task (KubernetesPodOperator's lifecycle): it waits in the triggerer when
    # [operators] default_deferrable is on, a retry after a lost worker reattaches to its pod, and marking the
    # task failed deletes the pod.
    scores = WandbEvalPodOperator.partial(
        task_id="evaluate",
        checkpoint="{{ params.checkpoint }}",
        project="{{ params.project }}",
        settings={"limit": "{{ params.limit }}"},
        server_resources={"gpus": GPUS, "max_model_len": 4096},
        wandb_mode="online",
        publish_leaderboard=False,  # the pods run at once: the leaderboard is published once, below
        kubernetes=CLUSTER,
        # On preemptible GPU nodes add retries=2 (or default_args): a lost pod's task then gets a new pod.
    ).expand(benchmarks=selected())

    publish = LeaderboardPublishOperator(
        task_id="publish", project="{{ params.project }}", enabled="{{ params.publish }}", wandb_mode="online"
    )

    scores >> publish


evaljobs_kubernetes()
