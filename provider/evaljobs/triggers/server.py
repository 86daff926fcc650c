"""The trigger behind a deferred :class:`~evaljobs.operators.serve.VLLMServeOperator` in kubernetes mode."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

PERMANENT = (400, 401, 403, 404)  # API answers that waiting cannot change


class VLLMServerTrigger(BaseTrigger):
    """Polls the shared server's Deployment every ``poll_interval`` seconds until a replica is ready (vLLM
    answers ``/health``) or the wall-clock ``deadline`` (epoch seconds, so a triggerer restart keeps it) passes.

    Reads go through the cncf-kubernetes provider's async hook (``kubernetes_asyncio``); transient API failures
    (5xx, 429, network) are retried until the deadline, anything else ends the wait with an ``error`` event.
    """

    def __init__(
        self,
        name: str,
        namespace: str,
        base_url: str,
        deadline: float,
        kubernetes_conn_id: str = "kubernetes_default",
        poll_interval: float = 10.0,
    ):
        super().__init__()
        self.name, self.namespace, self.base_url, self.deadline = name, namespace, base_url, deadline
        self.kubernetes_conn_id, self.poll_interval = kubernetes_conn_id, poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "name": self.name,
                "namespace": self.namespace,
                "base_url": self.base_url,
                "deadline": self.deadline,
                "kubernetes_conn_id": self.kubernetes_conn_id,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from aiohttp import ClientError
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
        from kubernetes_asyncio.client import AppsV1Api
        from kubernetes_asyncio.client.exceptions import ApiException

        hook = AsyncKubernetesHook(conn_id=self.kubernetes_conn_id)
        where = {"name": self.name, "namespace": self.namespace}
        seen = "no status read yet"
        while True:
            try:
                async with hook.get_conn() as client:
                    deployment = await AppsV1Api(client).read_namespaced_deployment_status(self.name, self.namespace)
            except ApiException as exc:
                seen = f"reading it answered HTTP {exc.status} {exc.reason}"
                if exc.status in PERMANENT:
                    yield TriggerEvent(where | {"status": "error", "message": seen})
                    return
            except (ClientError, OSError) as exc:  # OSError includes TimeoutError
                seen = f"the Kubernetes API was unreachable ({type(exc).__name__}: {exc})"
            except Exception as exc:  # a broken connection or config: report it, never crash the triggerer
                yield TriggerEvent(where | {"status": "error", "message": f"{type(exc).__name__}: {exc}"})
                return
            else:
                status = deployment.status
                if (status.ready_replicas or 0) >= 1:
                    yield TriggerEvent(where | {"status": "success", "base_url": self.base_url})
                    return
                seen = f"{status.ready_replicas or 0} of {status.replicas or 0} replicas ready"
            left = self.deadline - time.time()
            if left <= 0:
                yield TriggerEvent(where | {"status": "timeout", "message": f"last seen: {seen}"})
                return
            await asyncio.sleep(min(self.poll_interval, left))
