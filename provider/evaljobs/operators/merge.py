"""Merge a benchmark sharded over mapped evaluations into one result: the task downstream of the shards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.exceptions import AirflowException
from airflow.sdk import BaseOperator

from evaljobs.assets import emit_leaderboard_event, with_leaderboard_outlet
from evaljobs.operators.links import LeaderboardLink


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
    """

    template_fields: Sequence[str] = ("parts", "publish_leaderboard", "wandb_mode")
    operator_extra_links = (LeaderboardLink(),)

    def __init__(
        self,
        *,
        parts: Any,
        publish_leaderboard: bool = True,
        wandb_conn_id: str = "wandb_default",
        wandb_mode: str = "auto",
        **kwargs: Any,
    ) -> None:
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
        if not folders:
            raise AirflowException("parts: no shard part to merge (give the shard tasks' .output or part folders)")
        publish = str(self.publish_leaderboard).lower() not in ("false", "0", "none", "")
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


def part_folders(parts: Any) -> list[str]:
    """The parts' folders named by ``parts``: shard summaries (``shard_parts``: benchmark -> folder), folders,
    or a mix; each once, in order."""
    items = [parts] if isinstance(parts, (str, dict)) else list(parts or [])
    folders: list[str] = []
    for item in items:
        if isinstance(item, dict):
            folders += [str(f) for f in (item.get("shard_parts") or {}).values()]
        elif item:
            folders.append(str(item))
    return list(dict.fromkeys(folders))


def shared_parts_home(shards: Any, kubernetes: Any, results_home: Any = None) -> None:
    """Refuse, before any pod is submitted, a sharded evaluation whose pods would keep their parts in their own
    (pod-local) results home: the merge could never read them. A PVC or an object-store home is shared."""
    from evaljobs.engine.objectstore import is_url

    if not isinstance(shards, int) or shards <= 1 or kubernetes is None or is_url(results_home):
        return
    get = kubernetes.get if isinstance(kubernetes, dict) else lambda key: getattr(kubernetes, key, None)
    if not get("results_volume_claim"):
        raise ValueError(
            f"shards: the {shards} shard pods write their parts to the results home, which the merge reads; "
            "without kubernetes.results_volume_claim it is each pod's own emptyDir, lost with the pod. Set "
            "kubernetes.results_volume_claim to a PVC every pod can mount (ReadWriteMany), or give an object-store "
            "results home (s3://bucket/prefix)"
        )
