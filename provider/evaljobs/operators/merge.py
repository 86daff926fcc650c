"""Merge a benchmark sharded over mapped evaluations into one result: the task downstream of the shards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.exceptions import AirflowException
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import BaseOperator

from evaljobs.assets import emit_leaderboard_event, with_leaderboard_outlet
from evaljobs.operators.links import LeaderboardLink
from evaljobs.operators.publish import switched_on


class ShardMergeOperator(BaseOperator):
    """Merge the parts the shard tasks wrote (``evaljobs merge``, as a child process on the worker): one result
    row, bundle and W&B run a benchmark, computed as one job computes it; then the project's leaderboard is
    published (unless ``publish_leaderboard`` is off) and its Asset gains an event. Returns the merged jobs'
    summaries, by benchmark.

    A DAG maps the evaluation over its shards, then merges::

        shards = WandbEvalOperator.partial(task_id="evaluate", ..., shards=4, publish_leaderboard=False)
        merged = ShardMergeOperator(task_id="merge", parts=shards.expand(shard=list(range(4))).output)

    A failed shard's retry re-runs that shard alone (from the request cache); the merge refuses, naming them,
    while shards are missing. The shards and the merge must share the results home: one machine's folder, a
    PVC, or object storage (``s3://...``: the parts are put there, and the merge pulls them on any machine).

    :param parts: the shard tasks' summaries (their XCom: ``.output`` of the mapped task), or the parts'
        folders that ``evaljobs run`` printed
    :param publish_leaderboard: publish the project's leaderboard once merged
    :param wandb_conn_id: the ``wandb`` connection; without it the merged runs are logged offline
    :param wandb_mode: how the shard jobs logged (``auto``, ``online``, ``offline``, ``disabled``): which W&B
        credentials the merge is given
    :param execution_mode: ``local`` (a child process on the worker, which needs the ``[engine]`` extra) or
        ``kubernetes``: the merge runs as a pod of the worker image (:class:`ShardMergePodOperator`), given
        ``kubernetes`` (the shard pods' settings: the same ``results_volume_claim``, or an object-store home)
    """

    template_fields: Sequence[str] = ("parts", "publish_leaderboard", "wandb_mode")
    operator_extra_links = (LeaderboardLink(),)

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("execution_mode") == "kubernetes":
            return ShardMergePodOperator(*args, **{k: v for k, v in kwargs.items() if k != "execution_mode"})
        return super().__new__(cls)

    def __init__(
        self,
        *,
        parts: Any,
        execution_mode: str = "local",
        publish_leaderboard: bool = True,
        wandb_conn_id: str = "wandb_default",
        wandb_mode: str = "auto",
        **kwargs: Any,
    ) -> None:
        if execution_mode != "local":
            raise ValueError(f"execution_mode must be 'local' or 'kubernetes' (got {execution_mode!r})")
        super().__init__(**(with_leaderboard_outlet(kwargs) if publish_leaderboard is not False else kwargs))
        self.parts, self.publish_leaderboard = parts, publish_leaderboard
        self.wandb_conn_id, self.wandb_mode = wandb_conn_id, wandb_mode
        self._process = None

    def execute(self, context: Any) -> dict[str, Any]:
        from evaljobs.engine.errors import EvalJobsError
        from evaljobs.engine.preflight import engine_problem
        from evaljobs.engine.shards import run_merge
        from evaljobs.hooks.wandb import WandbHook

        if problem := engine_problem():
            raise AirflowException(problem)
        folders = part_folders(self.parts)
        publish = switched_on(self.publish_leaderboard)
        try:
            secrets = WandbHook(self.wandb_conn_id).env(self.wandb_mode) if self.wandb_mode != "disabled" else {}
            summaries = run_merge(folders, secrets, publish, log=self.log, started=self._started)
        except EvalJobsError as exc:
            raise AirflowException(str(exc)) from None
        merged = {benchmark: s for s in summaries for benchmark in s["scores"]}
        rows = [s["leaderboard_row"] for s in summaries if s.get("leaderboard_row")]
        if publish and rows:
            emit_leaderboard_event(context, summaries[-1]["project"], {"rows": rows[-1:]})
        return merged

    def _started(self, process: Any) -> None:
        self._process = process

    def on_kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()


class ShardMergePodOperator(KubernetesPodOperator):
    """The merge as a pod (``evaljobs merge`` in the worker image, the results PVC mounted where the shard pods
    mount it), with KubernetesPodOperator's lifecycle; its XCom is the merged summaries. The W&B key and the
    object store's AWS variables reach it as Kubernetes Secret references (``kubernetes.secrets``) only."""

    template_fields: Sequence[str] = ("parts", "publish_leaderboard", "wandb_mode")

    def __init__(
        self,
        *,
        parts: Any,
        kubernetes: dict[str, Any] | None = None,
        publish_leaderboard: bool = True,
        wandb_conn_id: str = "wandb_default",
        wandb_mode: str = "auto",
        **kwargs: Any,
    ) -> None:
        from evaljobs.operators.pod import LIFECYCLE
        from evaljobs.operators.serve import cluster_settings

        settings = cluster_settings("kubernetes", kubernetes)
        lifecycle = LIFECYCLE | {"kubernetes_conn_id": settings.kubernetes_conn_id, "namespace": settings.namespace}
        kwargs = with_leaderboard_outlet(kwargs) if publish_leaderboard is not False else kwargs
        super().__init__(**(lifecycle | {"name": "evaljobs-merge", "image": settings.image} | kwargs))
        self.parts, self.publish_leaderboard, self.kubernetes = parts, publish_leaderboard, settings
        self.wandb_conn_id, self.wandb_mode = wandb_conn_id, wandb_mode

    def execute(self, context: Any) -> Any:
        self.prepare_pod()
        return super().execute(context)

    def prepare_pod(self) -> None:
        """The pod's command, volumes and environment from the rendered ``parts`` (no cluster needed)."""
        from kubernetes.client import V1VolumeMount

        from evaljobs.engine.objectstore import is_url
        from evaljobs.hooks.wandb import WandbHook
        from evaljobs.kubernetes.pods import (
            OBJECT_STORE_SECRETS,
            RESULTS_DIR,
            XCOM_FILE,
            _results_volume,
            plain_env_vars,
            wandb_env,
        )
        from evaljobs.kubernetes.secrets import secret_env
        from evaljobs.kubernetes.vllm import POD_PYTHON

        folders = part_folders(self.parts)
        if not self.kubernetes.results_volume_claim and not all(is_url(f) for f in folders):
            raise AirflowException(
                "kubernetes.results_volume_claim: the parts are in the shard pods' results home; mount the same PVC"
            )
        publish = switched_on(self.publish_leaderboard)
        flag = "--publish-leaderboard" if publish else "--no-publish-leaderboard"
        self.cmds = [POD_PYTHON, "-m", "evaljobs.cli", "merge", *folders, flag, "--summary-out", XCOM_FILE]
        plain, names = {}, []
        if self.wandb_mode != "disabled":
            plain, names = wandb_env(WandbHook(self.wandb_conn_id).target(self.wandb_mode))
        names += [n for n in OBJECT_STORE_SECRETS if self.kubernetes.secret_ref(n)]
        env = plain_env_vars({"EVALJOBS_HOME": RESULTS_DIR, "PYTHONUNBUFFERED": "1"} | plain)
        self.env_vars = [*env, *secret_env(names, self.kubernetes)]
        self.volumes = [_results_volume(self.kubernetes)]
        self.volume_mounts = [V1VolumeMount(name="results", mount_path=RESULTS_DIR)]
        self.labels = {"app.kubernetes.io/name": "evaljobs", "evaljobs.io/merge": "true"}
        self.service_account_name = self.kubernetes.service_account
        self.pod_request_obj = None


def part_folders(parts: Any) -> list[str]:
    """The parts' folders named by ``parts``: shard summaries (``shard_parts``: benchmark -> folder), folders,
    or a mix; each once, in order. None at all fails the task."""
    items = [parts] if isinstance(parts, (str, dict)) else list(parts or [])
    folders: list[str] = []
    for item in items:
        if isinstance(item, dict):
            folders += [str(f) for f in (item.get("shard_parts") or {}).values()]
        elif item:
            folders.append(str(item))
    if not folders:
        raise AirflowException("parts: no shard part to merge (give the shard tasks' .output or part folders)")
    return list(dict.fromkeys(folders))
