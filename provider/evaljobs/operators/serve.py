"""Serve a checkpoint with vLLM for the tasks of a DAG run: a setup task and its teardown."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal, TypedDict

from airflow.exceptions import AirflowException
from airflow.sdk import BaseOperator
from airflow.sdk.configuration import conf

EXECUTION_MODES = ("local", "kubernetes")


class ServerInfo(TypedDict):
    """The XCom of :class:`VLLMServeOperator`: one shape for a local process, a cluster server and no server.

    ``base_url`` (the OpenAI-compatible ``.../v1``), ``model`` (the served name), ``checkpoint`` (the folder it
    serves, on the worker or in the cluster) and ``artifact`` (the W&B artifact it came from, or None) are what
    evaluations read; ``pid`` and ``log`` are set for a local process, ``name``, ``namespace`` and ``conn_id``
    (its Deployment/Service and the Kubernetes connection) for a cluster server, the others None. Mode
    ``cached``: no server was started, the request cache holds every request of the evaluations it serves
    (``base_url`` None; an evaluation then runs as a job that serves the checkpoint itself should it need to).
    """

    mode: Literal["local", "kubernetes", "cached"]
    base_url: str | None
    model: str
    checkpoint: str
    artifact: str | None
    pid: int | None
    log: str | None
    name: str | None
    namespace: str | None
    conn_id: str | None


def server_info(mode: Literal["local", "kubernetes", "cached"], **fields: Any) -> ServerInfo:
    """A :class:`ServerInfo` with every field present (those not given are None)."""
    return ServerInfo(mode=mode, **{key: fields.get(key) for key in ServerInfo.__annotations__ if key != "mode"})


def cluster_settings(execution_mode: str, kubernetes: dict[str, Any] | None) -> Any:
    """The one place that reads ``execution_mode``: None for ``local``, the checked
    :class:`~evaljobs.kubernetes.settings.KubernetesSettings` for ``kubernetes``."""
    if execution_mode not in EXECUTION_MODES:
        raise ValueError(f"execution_mode {execution_mode!r} is not available; use one of {EXECUTION_MODES}")
    if execution_mode == "local":
        if kubernetes:
            raise ValueError("kubernetes settings are given but execution_mode is 'local'; set it to 'kubernetes'")
        return None
    from evaljobs.engine.errors import SpecError
    from evaljobs.engine.spec import validated
    from evaljobs.kubernetes.settings import KubernetesSettings

    try:
        return validated(KubernetesSettings, kubernetes or {})
    except SpecError as exc:
        raise SpecError([f"kubernetes.{problem}" for problem in exc.problems]) from None


class VLLMServeOperator(BaseOperator):
    """Start vLLM's OpenAI-compatible server for a model folder and push its :class:`ServerInfo`.

    Use it as a setup task with :class:`VLLMStopOperator` as its teardown, which stops the server even when
    the evaluations fail. In ``local`` mode the server is a process on the worker, so the evaluation tasks
    must run on the same machine (LocalExecutor, ``dags test``).

    :param checkpoint: the model folder, a W&B model artifact ``entity/project/name:alias`` (downloaded once per
        version with the ``wandb_conn_id`` connection), or a Hugging Face repo ``org/name[@revision]``
    :param served_name: the model name the server answers to (default: the folder's name)
    :param server_resources: :class:`~evaljobs.engine.spec.Resources` fields (gpus, max_model_len, dtype, ...)
    :param execution_mode: ``local`` (a process on the worker) or ``kubernetes`` (a vLLM Deployment and its
        Service; the XCom's ``base_url`` is the in-cluster URL and evaluation pods need no GPU). A retry adopts
        the Deployment and Service its earlier try created; killing the task deletes them
    :param kubernetes: :class:`~evaljobs.kubernetes.settings.KubernetesSettings` fields, for ``kubernetes`` mode
    :param replicas: in ``kubernetes`` mode, the Deployment's vLLM pods (each ``server_resources.gpus`` GPUs, a
        whole copy of the model): the Service spreads the evaluations' requests over the ready ones. The server
        counts as ready, and the task succeeds, once one replica is; the others join as they get ready
    :param deferrable: in ``kubernetes`` mode, wait for the server in the triggerer
        (:class:`~evaljobs.triggers.server.VLLMServerTrigger`) instead of holding a worker slot; default:
        ``[operators] default_deferrable``, as KubernetesPodOperator
    :param poll_interval: seconds between readiness checks in ``kubernetes`` mode
    :param evaluations: the task ids of the (unmapped) :class:`~evaljobs.operators.evaluate.WandbEvalOperator`
        tasks this server is for. In ``local`` mode, when the request cache holds every request they will make
        (checked exactly: their own evaluation, run with no server), vLLM is not started and the XCom's mode is
        ``cached``; one missing request, or a mapped evaluation among them, and it is started
    """

    template_fields: Sequence[str] = ("checkpoint", "served_name", "log_dir")

    def __init__(
        self,
        *,
        checkpoint: str,
        served_name: str | None = None,
        server_resources: dict[str, Any] | None = None,
        log_dir: str | None = None,
        wandb_conn_id: str = "wandb_default",
        execution_mode: str = "local",
        kubernetes: dict[str, Any] | None = None,
        replicas: int = 1,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 10.0,
        evaluations: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from evaljobs.engine.spec import Resources, validated

        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be a positive number of seconds (got {poll_interval!r})")
        self.kubernetes = cluster_settings(execution_mode, kubernetes)
        if not isinstance(replicas, int) or replicas < 1 or (replicas > 1 and not self.kubernetes):
            raise ValueError(
                f"replicas must be a whole number >= 1, above 1 in kubernetes mode only (got {replicas!r})"
            )
        self.deferrable, self.poll_interval, self.replicas = deferrable, poll_interval, replicas
        self._cluster_server: Any = None
        self.server_resources = validated(Resources, server_resources or {})
        self.checkpoint, self.served_name, self.log_dir = checkpoint, served_name, log_dir
        self.execution_mode, self.wandb_conn_id = execution_mode, wandb_conn_id
        self.evaluations = [evaluations] if isinstance(evaluations, str) else list(evaluations)

    def execute(self, context: Any) -> ServerInfo:
        from pathlib import Path

        from evaljobs.engine import serving
        from evaljobs.engine.errors import EvalJobsError
        from evaljobs.engine.preflight import checkpoint_folder, engine_problem, vllm_problem
        from evaljobs.engine.spec import ModelSource, default_results_home
        from evaljobs.hooks.wandb import WandbHook

        if self.kubernetes:
            return self._serve_on_cluster(context)
        if problem := vllm_problem() or engine_problem():
            raise AirflowException(problem)
        try:
            source = ModelSource(checkpoint=self.checkpoint)
            target = WandbHook(self.wandb_conn_id).target() if source.is_artifact else None
            folder = checkpoint_folder(source, target)
            name = self.served_name or folder.path.name
            artifact = self.checkpoint if source.is_artifact else None
            if self.evaluations and self.answered_by_cache(context, str(folder.path), name):
                self.log.info("every request of %s is in the request cache: vLLM is not started", self.evaluations)
                return server_info("cached", model=name, checkpoint=str(folder.path), artifact=artifact)
            log_dir = Path(self.log_dir or default_results_home() / "servers" / context["run_id"].replace(":", "_"))
            server = serving.start(folder.path, name, self.server_resources, log_dir, detach=True)
        except EvalJobsError as exc:
            raise AirflowException(str(exc)) from None
        self.log.info(
            "vLLM serves %s at %s (pid %s, log %s)", name, server.base_url, server.process.pid, server.log_path
        )
        return server_info(
            "local",
            base_url=server.base_url,
            model=name,
            checkpoint=str(folder.path),
            artifact=artifact,
            pid=server.process.pid,
            log=str(server.log_path),
        )

    def answered_by_cache(self, context: Any, folder: str, name: str) -> bool:
        """Whether the request cache answers every request of the ``evaluations`` tasks, rendered in this task's
        context (the same DAG run) with the checkpoint folder as their model."""
        from evaljobs.engine.command import answered_by_cache
        from evaljobs.engine.errors import SpecError
        from evaljobs.engine.spec import JobSpec

        for task_id in self.evaluations:
            task = context["dag"].get_task(task_id)
            if task.is_mapped:
                self.log.info("%s is mapped: its requests are not known before it runs, so vLLM is started", task_id)
                return False
            probe = copy.copy(task)
            try:
                for field in task.template_fields:
                    if field != "server":  # this task's own XCom, not pushed yet
                        setattr(probe, field, task.render_template(getattr(task, field), context))
                probe.server = server_info("cached", model=name, checkpoint=folder)
                spec = JobSpec.parse(probe.job_spec(context))
            except Exception as exc:  # noqa: BLE001 - a check that cannot be made starts the server, never fails it
                reason = "; ".join(exc.problems) if isinstance(exc, SpecError) else f"{type(exc).__name__}: {exc}"
                self.log.info("%s cannot be checked against the request cache (%s): vLLM is started", task_id, reason)
                return False
            if not answered_by_cache(spec, self.log):
                return False
        return True

    def shared_server(self, context: Any) -> Any:
        """The Deployment + Service manifests of this task's server
        (:class:`~evaljobs.kubernetes.server.SharedServer`), refused before submission when they cannot work."""
        from evaljobs.engine.spec import ModelSource
        from evaljobs.hooks.wandb import WandbHook
        from evaljobs.kubernetes.pods import plain_env_vars, wandb_env
        from evaljobs.kubernetes.secrets import secret_env
        from evaljobs.kubernetes.server import server_name, shared_server

        source = ModelSource(checkpoint=self.checkpoint)
        fetch_env = []
        if source.is_artifact:
            plain, _ = wandb_env(WandbHook(self.wandb_conn_id).target())
            fetch_env = secret_env(["WANDB_API_KEY"], self.kubernetes) + plain_env_vars(plain)
        name = server_name(context["dag_run"].dag_id, context["run_id"], self.task_id)
        served = self.served_name or source.display_name.rsplit("/", 1)[-1]
        return shared_server(name, source, served, self.server_resources, self.kubernetes, fetch_env, self.replicas)

    def _serve_on_cluster(self, context: Any) -> dict[str, Any]:
        import time

        from evaljobs.kubernetes import server as cluster
        from evaljobs.kubernetes.secrets import check_secrets, secret_refs
        from evaljobs.triggers.server import VLLMServerTrigger

        server = self._checked_server(context)
        conn_id, timeout = self.kubernetes.kubernetes_conn_id, self._timeout
        apps, core = _clients(conn_id)
        if refs := secret_refs(server.deployment):
            check_secrets(refs, server.namespace, core)
        self._cluster_server = server  # for on_kill
        try:
            if adopted := cluster.create(server, apps, core):  # an earlier try's (a lost worker): kept
                self.log.info(
                    "adopted the %s %s/%s of an earlier try", " and ".join(adopted), server.namespace, server.name
                )
            else:
                self.log.info("created vLLM deployment and service %s/%s", server.namespace, server.name)
            if not self.deferrable:
                cluster.wait_ready(server, apps, timeout, self.poll_interval)
        except BaseException:
            cluster.delete(server.name, server.namespace, apps, core)
            raise
        if not self.deferrable:
            return self._xcom(server)
        trigger = VLLMServerTrigger(
            server.name, server.namespace, server.base_url, time.time() + timeout, conn_id, self.poll_interval
        )
        self.log.info("waiting up to %.0f s for %s in the triggerer", timeout, server.base_url)
        self.defer(trigger=trigger, method_name="execute_complete")

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Push the server's XCom once the trigger saw it ready; otherwise delete its Deployment and Service
        and raise :class:`~evaljobs.kubernetes.server.ServerNotReadyError`."""
        from evaljobs.kubernetes import server as cluster

        server = self._checked_server(context)  # rebuilt: the same names as before deferring
        if event.get("status") == "success":
            self.log.info("vLLM is ready at %s", event["base_url"])
            return self._xcom(server)
        name, namespace = server.name, server.namespace
        problems = cluster.delete(name, namespace, *_clients(self.kubernetes.kubernetes_conn_id))
        if event.get("status") == "timeout":
            message = f"{cluster.not_ready_message(name, namespace, self._timeout)} ({event['message']})"
        else:
            message = f"vLLM deployment {namespace}/{name} could not be awaited: {event.get('message')}"
        if problems:
            raise cluster.ServerNotReadyError(f"{message}; deleting it failed: {'; '.join(problems)}")
        raise cluster.ServerNotReadyError(f"{message}; its deployment and service are deleted")

    def on_kill(self) -> None:
        """Delete the cluster server this try created or adopted (a local process is the teardown's to stop)."""
        from evaljobs.kubernetes import server as cluster

        if self._cluster_server is not None:
            server, self._cluster_server = self._cluster_server, None
            problems = cluster.delete(server.name, server.namespace, *_clients(self.kubernetes.kubernetes_conn_id))
            self.log.info(
                "deleted vLLM deployment and service %s/%s%s",
                server.namespace,
                server.name,
                f" ({'; '.join(problems)})" if problems else "",
            )

    @property
    def _timeout(self) -> float:
        return self.kubernetes.startup_timeout + self.server_resources.startup_timeout

    def _checked_server(self, context: Any) -> Any:
        from evaljobs.engine.errors import EvalJobsError

        try:
            return self.shared_server(context)
        except EvalJobsError as exc:
            raise AirflowException(str(exc)) from None

    def _xcom(self, server: Any) -> ServerInfo:
        from evaljobs.engine.spec import ModelSource

        return server_info(
            "kubernetes",
            base_url=server.base_url,
            model=server.model,
            checkpoint=server.model_path,
            artifact=self.checkpoint if ModelSource(checkpoint=self.checkpoint).is_artifact else None,
            name=server.name,
            namespace=server.namespace,
            conn_id=self.kubernetes.kubernetes_conn_id,
        )


def _clients(conn_id: str) -> tuple[Any, Any]:
    """AppsV1Api and CoreV1Api of the ``kubernetes`` connection (or the in-cluster configuration)."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    from kubernetes.client import AppsV1Api, CoreV1Api

    client = KubernetesHook(conn_id=conn_id).get_conn()
    return AppsV1Api(client), CoreV1Api(client)


class VLLMStopOperator(BaseOperator):
    """Teardown of :class:`VLLMServeOperator`: stop the server whose XCom is ``server``."""

    template_fields: Sequence[str] = ("server",)

    def __init__(self, *, server: ServerInfo | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server = server

    def execute(self, context: Any) -> None:
        from evaljobs.engine.serving import stop_group

        server = self.server
        if not server:
            self.log.info("no server to stop (the setup task did not start one)")
        elif server["mode"] == "cached":
            self.log.info("no server to stop (the request cache answered every request)")
        elif server["mode"] == "kubernetes":
            from evaljobs.kubernetes.server import delete

            problems = delete(server["name"], server["namespace"], *_clients(server["conn_id"]))
            if problems:
                raise AirflowException("could not delete the vLLM server: " + "; ".join(problems))
            self.log.info("deleted vLLM deployment and service %s/%s", server["namespace"], server["name"])
        else:
            stop_group(int(server["pid"]))
            self.log.info("stopped vLLM at %s (pid %s)", server["base_url"], server["pid"])
