"""The evaluation as a pod: a KubernetesPodOperator whose lifecycle is the task's own (deferral, reattach on
retry, on_kill, the pod's log as the task log, the summary as XCom)."""

from __future__ import annotations

from typing import Any

from airflow.exceptions import AirflowException
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

from evaljobs.engine.objectstore import is_url
from evaljobs.operators.evaluate import EvaluationOperator, shared_parts_home
from evaljobs.operators.serve import cluster_settings

# How the pod runs, whatever the job: KubernetesPodOperator arguments a DAG may still override.
LIFECYCLE = {
    "get_logs": True,  # the evaluation's output is the task's log
    "do_xcom_push": True,  # the summary, through the XCom sidecar
    "durable": True,  # a retry after a lost worker follows the pod it left running (reattach_on_restart)
    "log_events_on_failure": True,
    "on_finish_action": "delete_pod",
    "on_kill_action": "delete_pod",
}


class WandbEvalPodOperator(EvaluationOperator, KubernetesPodOperator):
    """Run an evaluation job in a pod (``evaljobs run``, the command local mode runs) and return its summary.

    The arguments of :class:`~evaljobs.operators.evaluate.EvaluationOperator` describe the job;
    ``kubernetes`` (:class:`~evaljobs.kubernetes.settings.KubernetesSettings` fields) where it runs. The pod
    is built when the task runs, from the rendered job (:func:`evaljobs.kubernetes.pods.evaluation_pod`):
    what can be refused without a cluster (catalog, placement, size, unmapped secrets) and the Kubernetes
    Secrets it references are checked before it is submitted. ``WandbEvalOperator(execution_mode="kubernetes",
    ...)`` is this operator. ``results_home`` may be object storage (``s3://bucket/prefix``, the store's variables
    mapped in ``kubernetes.secrets``), never a path of the worker.

    The rest is KubernetesPodOperator's: ``deferrable`` (default: ``[operators] default_deferrable``) waits for
    the pod in the triggerer; a retry reattaches to a pod its previous try left running, or starts a new one;
    ``on_kill`` deletes the pod; its output is the task's log. Its other arguments (``poll_interval``,
    ``on_finish_action``, ``termination_grace_period``, ...) pass through; ``image``, ``namespace`` and the pod's
    contents come from ``kubernetes`` and the job.
    """

    template_fields = EvaluationOperator.template_fields

    def __init__(self, *, kubernetes: dict[str, Any] | None = None, **kwargs: Any) -> None:
        settings = cluster_settings("kubernetes", kubernetes)
        if "{{" not in str(kwargs.get("results_home")):  # a templated one is checked once rendered
            _check_home(kwargs.get("results_home"))
        lifecycle = LIFECYCLE | {"kubernetes_conn_id": settings.kubernetes_conn_id, "namespace": settings.namespace}
        super().__init__(**(lifecycle | kwargs))
        self.kubernetes = settings
        shared_parts_home(self.shards, settings, self.results_home)  # a shard's part must outlive its pod

    def execute(self, context: Any) -> Any:
        spec = self.prepare_pod(context)
        self.check_secrets()
        self._reentered: Any = None
        summary = super().execute(context)
        if summary is None and self._reentered is not None:
            # Deferrable, but the pod (a previous try's, reattached) had already ended: KubernetesPodOperator
            # then runs trigger_reentry itself, without deferring, and drops what it returns.
            return self._reentered
        return self.published(context, spec, summary)

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        """Resumed from KubernetesPodOperator's trigger (a fresh operator: the pod is found by the event's name)."""
        spec = self.parsed_spec(context)
        self._reentered = self.published(context, spec, super().trigger_reentry(context, event))
        return self._reentered

    def prepare_pod(self, context: Any) -> Any:
        """Set the operator's pod attributes from the rendered job (no cluster needed), refusing what cannot
        work; return the job spec."""
        from evaljobs.engine.errors import EvalJobsError, PreflightError
        from evaljobs.engine.preflight import catalog_problems, secret_names
        from evaljobs.hooks.wandb import WandbHook
        from evaljobs.kubernetes.pods import evaluation_pod, wandb_env

        _check_home(self.results_home)
        spec = self.parsed_spec(context)
        try:
            if problems := catalog_problems(spec):  # the pod runs the full preflight; this needs no cluster
                raise PreflightError(problems)
            plain, names = {}, secret_names(spec)
            if self.kubernetes.dataset_mirror_claim:  # it may hold the gated datasets: the HF token when mapped
                token = spec.datasets.hf_token_secret
                names = [name for name in names if name != token or self.kubernetes.secret_ref(name)]
            if spec.destination.wandb != "disabled":
                plain, wandb_secrets = wandb_env(WandbHook(self.wandb_conn_id).target(spec.destination.wandb))
                names += wandb_secrets
            pod = evaluation_pod(spec, self.kubernetes, plain_env=plain, secret_names=names)
        except EvalJobsError as exc:
            raise AirflowException(str(exc)) from None
        for attribute, value in pod.items():
            setattr(self, attribute, value)
        self.pod_request_obj = None  # built by KubernetesPodOperator from these attributes
        return spec

    def check_secrets(self) -> None:
        """Refuse before submission when a Kubernetes Secret (or key) the pod references is missing, read with
        the operator's own client (key names only)."""
        from evaljobs.kubernetes.secrets import check_secrets, secret_refs

        if refs := secret_refs(self.env_vars, self.init_containers):
            check_secrets(refs, self.kubernetes.namespace, self.client)


def _check_home(home: str | None) -> None:
    """Refuse a results home that is a path of the Airflow worker: it does not exist in the pod."""
    if home and not is_url(home):
        raise ValueError(
            f"results_home {home!r} is a path on the Airflow worker, not in the pod; in kubernetes mode give "
            "object storage (s3://bucket/prefix, credentials mapped in kubernetes.secrets) or set "
            "kubernetes.results_volume_claim"
        )
