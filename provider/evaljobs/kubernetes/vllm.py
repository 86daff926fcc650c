"""The vLLM container of a pod: the engine's own server command, GPUs as ``nvidia.com/gpu``, ``/dev/shm``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import V1Container, V1Volume

    from evaljobs.engine.spec import Resources
    from evaljobs.kubernetes.settings import KubernetesSettings

SHM_VOLUME = "dshm"
PROBE_PERIOD = 10
POD_PYTHON = "python3"  # the worker image's interpreter, which has vLLM and evaljobs


def shm_volume(resources: Resources, settings: KubernetesSettings) -> V1Volume:
    """A memory-backed ``/dev/shm`` (vLLM's tensor-parallel workers exchange tensors through it)."""
    from kubernetes.client import V1EmptyDirVolumeSource, V1Volume

    size = f"{math.ceil(settings.shm_gib * max(resources.gpus, 1))}Gi"
    return V1Volume(name=SHM_VOLUME, empty_dir=V1EmptyDirVolumeSource(medium="Memory", size_limit=size))


def vllm_container(
    folder: str,
    served_name: str,
    resources: Resources,
    settings: KubernetesSettings,
    model_mounts: list[Any],
    *,
    sidecar: bool,
) -> V1Container:
    """vLLM serving ``folder`` with tensor parallel = GPUs. A ``sidecar`` (an init container that keeps running)
    listens on localhost and gates the evaluation container with its startup probe; otherwise it listens on
    all interfaces for a Service and reports readiness."""
    from kubernetes.client import (
        V1Container,
        V1ContainerPort,
        V1HTTPGetAction,
        V1Probe,
        V1ResourceRequirements,
        V1VolumeMount,
    )

    from evaljobs.engine.serving import vllm_command

    host = "127.0.0.1" if sidecar else "0.0.0.0"
    health = V1HTTPGetAction(path="/health", port=settings.vllm_port)
    startup = V1Probe(
        http_get=health,
        period_seconds=PROBE_PERIOD,
        failure_threshold=math.ceil(resources.startup_timeout / PROBE_PERIOD),
    )
    gpus = {"nvidia.com/gpu": str(resources.gpus)}
    return V1Container(
        name="vllm",
        image=settings.image,
        command=vllm_command(folder, served_name, resources, settings.vllm_port, POD_PYTHON, host),
        ports=[V1ContainerPort(container_port=settings.vllm_port, name="http")],
        restart_policy="Always" if sidecar else None,
        startup_probe=startup,
        readiness_probe=None if sidecar else V1Probe(http_get=health, period_seconds=PROBE_PERIOD),
        resources=V1ResourceRequirements(limits=gpus, requests=gpus),
        volume_mounts=[*model_mounts, V1VolumeMount(name=SHM_VOLUME, mount_path="/dev/shm")],
    )
