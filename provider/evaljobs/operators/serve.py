"""Serve a checkpoint with vLLM for the tasks of a DAG run: a setup task and its teardown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.exceptions import AirflowException
from airflow.sdk import BaseOperator

EXECUTION_MODES = ("local",)


def _check_mode(execution_mode: str) -> None:
    if execution_mode not in EXECUTION_MODES:
        raise ValueError(f"execution_mode {execution_mode!r} is not available; use one of {EXECUTION_MODES}")


class VLLMServeOperator(BaseOperator):
    """Start vLLM's OpenAI-compatible server for a model folder and push ``{"base_url", "model", "pid"}``.

    Use it as a setup task with :class:`VLLMStopOperator` as its teardown, which stops the server even when
    the evaluations fail. In ``local`` mode the server is a process on the worker, so the evaluation tasks
    must run on the same machine (LocalExecutor, ``dags test``).

    :param checkpoint: the model folder, a W&B model artifact ``entity/project/name:alias`` (downloaded once per
        version with the ``wandb_conn_id`` connection), or a Hugging Face repo ``org/name[@revision]``
    :param served_name: the model name the server answers to (default: the folder's name)
    :param server_resources: :class:`~evaljobs.engine.spec.Resources` fields (gpus, max_model_len, dtype, ...)
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
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from evaljobs.engine.spec import Resources, validated

        _check_mode(execution_mode)
        self.server_resources = validated(Resources, server_resources or {})
        self.checkpoint, self.served_name, self.log_dir = checkpoint, served_name, log_dir
        self.execution_mode, self.wandb_conn_id = execution_mode, wandb_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from pathlib import Path

        from evaljobs.engine import serving
        from evaljobs.engine.errors import EvalJobsError
        from evaljobs.engine.preflight import checkpoint_folder, vllm_problem
        from evaljobs.engine.spec import ModelSource, default_results_home
        from evaljobs.hooks.wandb import WandbHook

        if problem := vllm_problem():
            raise AirflowException(problem)
        try:
            source = ModelSource(checkpoint=self.checkpoint)
            target = WandbHook(self.wandb_conn_id).target() if source.is_artifact else None
            folder = checkpoint_folder(source, target)
            name = self.served_name or folder.path.name
            log_dir = Path(self.log_dir or default_results_home() / "servers" / context["run_id"].replace(":", "_"))
            server = serving.start(folder.path, name, self.server_resources, log_dir, detach=True)
        except EvalJobsError as exc:
            raise AirflowException(str(exc)) from None
        self.log.info(
            "vLLM serves %s at %s (pid %s, log %s)", name, server.base_url, server.process.pid, server.log_path
        )
        return {
            "base_url": server.base_url,
            "model": name,
            "checkpoint": str(folder.path),
            "artifact": self.checkpoint if source.is_artifact else None,
            "pid": server.process.pid,
            "log": str(server.log_path),
        }


class VLLMStopOperator(BaseOperator):
    """Teardown of :class:`VLLMServeOperator`: stop the server whose XCom is ``server``."""

    template_fields: Sequence[str] = ("server",)

    def __init__(self, *, server: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server = server

    def execute(self, context: Any) -> None:
        from evaljobs.engine.serving import stop_group

        if not self.server or "pid" not in self.server:
            self.log.info("no server to stop (the setup task did not start one)")
            return
        stop_group(int(self.server["pid"]))
        self.log.info("stopped vLLM at %s (pid %s)", self.server["base_url"], self.server["pid"])
