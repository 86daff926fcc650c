"""The shared vLLM server on the cluster: a Deployment of ``replicas`` data-parallel vLLM pods and the Service
that spreads requests over their ready ones, created (or adopted, on a retry), awaited and deleted. Evaluation
pods then reach it by its in-cluster URL and need no GPU."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowException

from evaljobs.kubernetes.model import check_serving, place_model
from evaljobs.kubernetes.vllm import shm_volume, vllm_container

if TYPE_CHECKING:
    from kubernetes.client import V1EnvVar

    from evaljobs.engine.spec import ModelSource, Resources
    from evaljobs.kubernetes.settings import KubernetesSettings

SERVER_LABEL = "evaljobs.io/server"


class ServerNotReadyError(AirflowException):
    """The shared server did not become ready in time; its Deployment and Service are deleted."""


@dataclass
class SharedServer:
    """The Deployment + Service pair of one shared server, as manifests (plain dicts, ready to submit)."""

    name: str
    namespace: str
    deployment: dict[str, Any]
    service: dict[str, Any]
    base_url: str
    model_path: str
    model: str


def server_name(*parts: str) -> str:
    """A stable DNS-1035 name for the server of one task of one DAG run."""
    return "evaljobs-vllm-" + hashlib.sha256("/".join(parts).encode()).hexdigest()[:12]


def shared_server(
    name: str,
    model: ModelSource,
    served_name: str,
    resources: Resources,
    settings: KubernetesSettings,
    fetch_env: list[V1EnvVar],
    replicas: int = 1,
) -> SharedServer:
    """The manifests for serving ``model`` with ``replicas`` vLLM pods of ``resources.gpus`` GPUs (1 or 2)
    each, refused here when the model cannot be placed or is over the size limit."""
    from kubernetes.client import (
        ApiClient,
        V1Deployment,
        V1DeploymentSpec,
        V1LabelSelector,
        V1ObjectMeta,
        V1PodSpec,
        V1PodTemplateSpec,
        V1Service,
        V1ServicePort,
        V1ServiceSpec,
    )

    placement = place_model(model, settings, fetch_env)
    check_serving(placement.path, resources, shared_server=True)
    labels = {"app.kubernetes.io/name": "evaljobs-vllm", SERVER_LABEL: name}
    meta = V1ObjectMeta(name=name, namespace=settings.namespace, labels=labels)
    serving = vllm_container(placement.path, served_name, resources, settings, placement.mounts, sidecar=False)
    pod = V1PodSpec(
        init_containers=placement.init_containers or None,
        containers=[serving],
        volumes=[*placement.volumes, shm_volume(resources, settings)],
        node_selector=settings.node_selector or None,
        tolerations=settings.tolerations or None,  # plain dicts: serialised as given
        affinity=settings.affinity,
        priority_class_name=settings.priority_class,
        service_account_name=settings.service_account,
        security_context=settings.security_context,
    )
    deployment = V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=meta,
        spec=V1DeploymentSpec(
            replicas=replicas,
            selector=V1LabelSelector(match_labels=labels),
            template=V1PodTemplateSpec(metadata=V1ObjectMeta(labels=labels), spec=pod),
        ),
    )
    service = V1Service(
        api_version="v1",
        kind="Service",
        metadata=meta,
        spec=V1ServiceSpec(
            selector=labels, ports=[V1ServicePort(name="http", port=settings.vllm_port, target_port="http")]
        ),
    )
    url = f"http://{name}.{settings.namespace}.svc.cluster.local:{settings.vllm_port}/v1"
    client = ApiClient()
    return SharedServer(
        name,
        settings.namespace,
        client.sanitize_for_serialization(deployment),
        client.sanitize_for_serialization(service),
        url,
        placement.path,
        served_name,
    )


def create(server: SharedServer, apps: Any, core: Any) -> list[str]:
    """Submit the Deployment and the Service (``apps``: AppsV1Api, ``core``: CoreV1Api); return the kinds that
    already existed (HTTP 409). Their names are the task's in its DAG run, so they are this task's, left by an
    earlier try (a lost worker): adopted as they are, not created twice."""
    from kubernetes.client.exceptions import ApiException

    adopted = []
    for kind, submit, manifest in (
        ("deployment", apps.create_namespaced_deployment, server.deployment),
        ("service", core.create_namespaced_service, server.service),
    ):
        try:
            submit(server.namespace, manifest)
        except ApiException as exc:
            if exc.status != 409:
                raise
            adopted.append(kind)
    return adopted


def wait_ready(
    server: SharedServer, apps: Any, timeout: float, poll: float = 10.0, sleep: Callable[[float], None] = time.sleep
) -> None:
    """Return once the Deployment has a ready replica (vLLM answers /health: the Service sends requests to the
    ready ones, the others join as they get ready); raise after ``timeout`` seconds. This blocks the worker:
    the deferrable wait is :class:`~evaljobs.triggers.server.VLLMServerTrigger`."""
    deadline = time.monotonic() + timeout
    while True:
        status = apps.read_namespaced_deployment_status(server.name, server.namespace).status
        if (status.ready_replicas or 0) >= 1:
            return
        if time.monotonic() >= deadline:
            raise ServerNotReadyError(not_ready_message(server.name, server.namespace, timeout))
        sleep(poll)


def not_ready_message(name: str, namespace: str, timeout: float) -> str:
    """What to check when the server was not ready in time."""
    return (
        f"vLLM deployment {namespace}/{name} was not ready within {timeout:.0f} s "
        "(kubernetes.startup_timeout + server_resources.startup_timeout); check `kubectl describe "
        f"deployment -n {namespace} {name}` for scheduling (GPUs, node selector, "
        "tolerations), and its logs for model compatibility and memory"
    )


def delete(name: str, namespace: str, apps: Any, core: Any) -> list[str]:
    """Delete the Deployment and the Service, each even when the other fails or is already gone; return the
    problems (empty when both are gone)."""
    from kubernetes.client.exceptions import ApiException

    problems = []
    for kind, remove in (
        ("deployment", apps.delete_namespaced_deployment),
        ("service", core.delete_namespaced_service),
    ):
        try:
            remove(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                problems.append(f"{kind} {namespace}/{name}: HTTP {exc.status} {exc.reason}")
    return problems
