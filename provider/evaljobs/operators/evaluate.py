"""Evaluate one or more benchmarks: against a served checkpoint, a checkpoint served for this task, or a
hosted OpenAI-compatible model. :class:`EvaluationOperator` holds what every evaluation operator shares (its
arguments, their parse-time checks, template fields and the job spec); :class:`WandbEvalOperator` runs the job
as a child process on the worker, :class:`~evaljobs.operators.pod.WandbEvalPodOperator` as a pod."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.exceptions import AirflowException
from airflow.sdk import BaseOperator

from evaljobs.assets import emit_leaderboard_event, with_leaderboard_outlet
from evaljobs.operators.links import LeaderboardLink, WandbRunsLink
from evaljobs.operators.serve import cluster_settings

# A mapped evaluation's name in the UI: its benchmark, or its benchmarks joined; a shard's adds "k/N" (1-based).
MAP_INDEX_TEMPLATE = "{{ task.benchmarks if task.benchmarks is string else task.benchmarks | join(', ') }}"
SHARD_INDEX_TEMPLATE = MAP_INDEX_TEMPLATE + "{{ ' ' ~ (task.shard + 1) ~ '/' ~ task.shards if task.shards else '' }}"


class EvaluationOperator(BaseOperator):
    """The evaluation job as operator arguments, shared by the local and the pod operator: one model source,
    the benchmarks, settings, destination; checked when the DAG is parsed, rendered into the job spec when the
    task runs. It runs nothing itself: subclasses run :meth:`job_spec`.

    Give exactly one model source: ``server`` (the :class:`~evaljobs.operators.serve.ServerInfo` XCom of
    :class:`~evaljobs.operators.serve.VLLMServeOperator`), ``checkpoint``
    (served by vLLM for this task alone), or ``base_url`` + ``model`` (hosted, with ``api_key_secret`` naming
    a team secret). Mappable: ``.partial(...).expand(benchmarks=[...])`` evaluates benchmarks in parallel, each
    mapped task named by its benchmark(s). A retry resumes from the request cache: finished requests are not
    sent again.

    :param benchmarks: a catalog name, a custom benchmark .yaml path, or a list of them
    :param settings: :class:`~evaljobs.engine.spec.Settings` fields (limit, num_fewshot, chat_template, ...)
    :param server_resources: :class:`~evaljobs.engine.spec.Resources` fields, when this task serves the checkpoint
    :param judge: :class:`~evaljobs.engine.spec.Judge` fields (model, base_url, api_key_secret, ...) for
        judge-scored benchmarks; the default is an OpenAI model with the team secret ``OPENAI_API_KEY``
    :param datasets: :class:`~evaljobs.engine.spec.Datasets` fields: ``mirror`` (a local copy of hub datasets)
        and ``hf_token_secret`` (the team secret holding the token for gated datasets)
    :param results_home: where results are kept (default: ``$EVALJOBS_HOME``)
    :param wandb_conn_id: the ``wandb`` connection (API key, host, entity); without it runs are logged offline
    :param wandb_mode: ``auto`` (online with a key, else offline), ``online``, ``offline`` or ``disabled``
    :param publish_leaderboard: update the project's leaderboard, its W&B run and the HTML report after the job;
        turn it off in mapped tasks and publish once downstream
        (:class:`~evaljobs.operators.publish.LeaderboardPublishOperator`). Publishing adds an event to the
        project's :func:`~evaljobs.assets.leaderboard_asset` (``extra``: the model's row)
    :param shards: split each benchmark over this many jobs, each its own rows (``settings.shards``); map over
        ``shard``: ``.partial(..., shards=4, publish_leaderboard=False).expand(shard=list(range(4)))``, then merge
        with :class:`~evaljobs.operators.merge.ShardMergeOperator`. The parts need a results home every job
        and the merge share (a PVC or object storage in kubernetes mode)
    :param shard: the shard this task evaluates, ``0..shards-1``
    """

    template_fields: Sequence[str] = (
        "benchmarks",
        "server",
        "checkpoint",
        "base_url",
        "model",
        "api_key_secret",
        "api",
        "project",
        "settings",
        "judge",
        "datasets",
        "results_home",
        "wandb_mode",
        "publish_leaderboard",
    )
    template_fields_renderers = {"settings": "json", "server": "json"}
    operator_extra_links = (WandbRunsLink(), LeaderboardLink())

    def __init__(
        self,
        *,
        benchmarks: str | Sequence[str],
        server: Any = None,
        checkpoint: str | None = None,
        base_url: str | None = None,
        model: str | None = None,
        api_key_secret: str | None = None,
        api: str = "chat",
        project: str = "evaljobs",
        settings: dict[str, Any] | None = None,
        server_resources: dict[str, Any] | None = None,
        judge: dict[str, Any] | None = None,
        datasets: dict[str, Any] | None = None,
        results_home: str | None = None,
        wandb_conn_id: str = "wandb_default",
        wandb_mode: str = "auto",
        publish_leaderboard: bool = True,
        shards: int | None = None,
        shard: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**(with_leaderboard_outlet(kwargs) if publish_leaderboard is not False else kwargs))
        self.shards, self.shard = shards, shard
        if shards and shards > 1 and shard is None:
            raise ValueError(
                f"shard: a task with shards={shards} evaluates one shard; map over it: "
                f".partial(..., shards={shards}).expand(shard=list(range({shards}))), then a ShardMergeOperator"
            )
        sources = [
            name for name, value in (("server", server), ("checkpoint", checkpoint), ("base_url", base_url)) if value
        ]
        if len(sources) != 1:
            raise ValueError(f"give exactly one model source (server, checkpoint or base_url); got {sources or 'none'}")
        self.benchmarks, self.server, self.checkpoint = benchmarks, server, checkpoint
        self.base_url, self.model, self.api_key_secret, self.api = base_url, model, api_key_secret, api
        self.project, self.settings, self.server_resources = project, settings or {}, server_resources or {}
        self.judge, self.datasets, self.results_home = judge or {}, datasets or {}, results_home
        self.wandb_conn_id, self.wandb_mode, self.publish_leaderboard = wandb_conn_id, wandb_mode, publish_leaderboard
        self._check_static()

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        """Mapped evaluations are named by their benchmark(s) in the UI unless ``map_index_template`` says else."""
        shared_parts_home(kwargs.get("shards"), kwargs.get("kubernetes"), kwargs.get("results_home"))  # parse time
        kwargs.setdefault("map_index_template", SHARD_INDEX_TEMPLATE if kwargs.get("shards") else MAP_INDEX_TEMPLATE)
        if kwargs.get("publish_leaderboard", True) is not False:
            kwargs = with_leaderboard_outlet(kwargs)
        return super().partial(**kwargs)

    def _check_static(self) -> None:
        """Fail at DAG-parse time on what is already known (untemplated names, limits, GPU counts)."""
        from evaljobs.engine.spec import Datasets, Judge, Resources, Settings, validated

        for fields, model in ((self.sharded(self.settings), Settings), (self.judge, Judge), (self.datasets, Datasets)):
            if not _templated(fields):
                validated(model, fields)
        validated(Resources, self.server_resources)
        names = [self.benchmarks] if isinstance(self.benchmarks, str) else self.benchmarks
        if isinstance(names, (list, tuple)) and not any(_templated(n) for n in names):
            from evaljobs.engine.catalog import resolve

            for name in names:
                try:
                    resolve(name)
                except LookupError as exc:
                    raise ValueError(f"benchmarks: {exc.args[0]}") from None

    def job_spec(self, context: Any) -> dict[str, Any]:
        """The job as data (see :class:`~evaljobs.engine.spec.JobSpec`), from the rendered arguments; its
        ``job_id`` comes from the run, the task and the map index, so every try of a task has the same one."""
        model: dict[str, Any] = {"model": self.model}
        if self.server:
            model |= {
                "checkpoint": self.server["artifact"] or self.server["checkpoint"],
                "endpoint": self.server["base_url"],
                "model": self.server["model"],
            }
        elif self.checkpoint:
            model["checkpoint"] = self.checkpoint
        else:
            model |= {"base_url": self.base_url, "api_key_secret": self.api_key_secret, "api": self.api}
        spec = {
            "model": {k: v for k, v in model.items() if v is not None},
            "benchmarks": [self.benchmarks] if isinstance(self.benchmarks, str) else list(self.benchmarks),
            "settings": self.sharded(self.settings),
            "resources": self.server_resources,
            "judge": self.judge,
            "datasets": self.datasets,
            "destination": {
                "project": self.project,
                "wandb": self.wandb_mode,
                "publish_leaderboard": self.publish_leaderboard,
            },
            "job_id": f"{context['run_id']}-{self.task_id}-{context['ti'].map_index}".replace(":", "_").replace(
                "+", "_"
            )[-64:],
        }
        if self.results_home:
            spec["destination"]["results_home"] = self.results_home
        return spec

    def sharded(self, settings: Any) -> Any:
        """``settings`` with the task's ``shards`` and ``shard`` (left to the settings when not given)."""
        given = {k: v for k, v in (("shards", self.shards), ("shard", self.shard)) if v is not None}
        return settings | given if given and isinstance(settings, dict) else settings

    def parsed_spec(self, context: Any) -> Any:
        """:meth:`job_spec` checked (a :class:`~evaljobs.engine.spec.JobSpec`); a problem fails the task with
        its message."""
        from evaljobs.engine.errors import EvalJobsError
        from evaljobs.engine.spec import JobSpec

        try:
            return JobSpec.parse(self.job_spec(context))
        except EvalJobsError as exc:
            raise AirflowException(str(exc)) from None

    def published(self, context: Any, spec: Any, summary: dict[str, Any] | None) -> dict[str, Any] | None:
        """``summary``, after the leaderboard event of a job that published (see :mod:`evaljobs.assets`)."""
        if summary and spec.destination.publish_leaderboard and summary.get("leaderboard_row"):
            emit_leaderboard_event(context, spec.destination.project, {"rows": [summary["leaderboard_row"]]})
        return summary


class WandbEvalOperator(EvaluationOperator):
    """Run an evaluation job on the worker, as a child process (``evaljobs run``), and return its summary
    (scores, metrics, bundle paths; no secret). The job's secrets (``api_key_secret``, the judge's, the HF
    token) are resolved by :class:`~evaljobs.hooks.secrets.TeamSecretsHook`. Arguments: those of
    :class:`EvaluationOperator`, and

    :param execution_mode: ``local`` (this operator), or ``kubernetes``, which makes it a
        :class:`~evaljobs.operators.pod.WandbEvalPodOperator` (one pod per task, with KubernetesPodOperator's
        lifecycle: deferral, reattach, logs), given ``kubernetes`` and the same arguments
    :param kubernetes: :class:`~evaljobs.kubernetes.settings.KubernetesSettings` fields (image, namespace,
        secrets, model_volume_claim, node_selector, tolerations, ...), for ``kubernetes`` mode
    :param object_store_conn_id: an ``aws`` connection (login, password, extra ``endpoint_url``) whose credentials
        the job gets as AWS variables when ``results_home`` is ``s3://...``; absent: the worker's own environment.
        Pods take them from Kubernetes secrets instead (``kubernetes={"secrets": {"AWS_ACCESS_KEY_ID": ...}}``)
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("execution_mode") == "kubernetes":
            from evaljobs.operators.pod import WandbEvalPodOperator

            return WandbEvalPodOperator(*args, **{k: v for k, v in kwargs.items() if k != "execution_mode"})
        return super().__new__(cls)

    @classmethod
    def partial(cls, **kwargs: Any) -> Any:
        if kwargs.get("execution_mode") == "kubernetes":
            from evaljobs.operators.pod import WandbEvalPodOperator

            return WandbEvalPodOperator.partial(**{k: v for k, v in kwargs.items() if k != "execution_mode"})
        return super().partial(**kwargs)

    def __init__(
        self,
        *,
        execution_mode: str = "local",
        kubernetes: dict[str, Any] | None = None,
        object_store_conn_id: str = "aws_default",
        **kwargs: Any,
    ) -> None:
        cluster_settings(execution_mode, kubernetes)  # refuses an unknown mode, and settings without the mode
        super().__init__(**kwargs)
        self.execution_mode, self.object_store_conn_id = execution_mode, object_store_conn_id
        self._process = None

    def execute(self, context: Any) -> dict[str, Any]:
        from evaljobs.engine.command import run_local
        from evaljobs.engine.errors import EvalJobsError
        from evaljobs.engine.preflight import secret_names
        from evaljobs.hooks.secrets import TeamSecretsHook
        from evaljobs.hooks.wandb import WandbHook

        spec = self.parsed_spec(context)
        try:
            hook = TeamSecretsHook()  # missing ones are left to the job's preflight, which lists every problem
            secrets = {name: value for name in secret_names(spec) if (value := hook.get(name))}
            if spec.destination.wandb != "disabled":
                secrets |= WandbHook(self.wandb_conn_id).env(spec.destination.wandb)
            if spec.destination.results_url:
                from evaljobs.hooks.objectstore import ObjectStoreCredentialsHook

                secrets |= ObjectStoreCredentialsHook(self.object_store_conn_id).env()
            return self.published(context, spec, run_local(spec, secrets, started=self._started, log=self.log))
        except EvalJobsError as exc:
            raise AirflowException(str(exc)) from None

    def _started(self, process: Any) -> None:
        self._process = process

    def on_kill(self) -> None:
        """Stop the running job (the process stops its vLLM server and keeps what it finished)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()


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


def _templated(value: Any) -> bool:
    return "{{" in str(value)
