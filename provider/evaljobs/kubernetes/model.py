"""Where a pod finds the checkpoint: a folder on a model PVC, or a W&B artifact fetched by an init container."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowException

from evaljobs.kubernetes.vllm import POD_PYTHON

if TYPE_CHECKING:
    from kubernetes.client import V1EnvVar

    from evaljobs.engine.spec import ModelSource, Resources
    from evaljobs.kubernetes.settings import KubernetesSettings

MODEL_VOLUME = "model"


class ModelPlacementError(AirflowException):
    """The checkpoint cannot be given to a pod as asked; the message says what to change."""


@dataclass
class ModelPlacement:
    """The checkpoint's folder inside the pod, the volume holding it and the init container filling it."""

    path: str
    volumes: list[Any] = field(default_factory=list)
    mounts: list[Any] = field(default_factory=list)
    init_containers: list[Any] = field(default_factory=list)


def place_model(model: ModelSource, settings: KubernetesSettings, wandb_env: list[V1EnvVar]) -> ModelPlacement:
    """Mount the model PVC read-only (a folder checkpoint), or download the W&B artifact into an emptyDir with
    ``evaljobs fetch-model``, which links ``path`` to the version it got (``wandb_env`` carries the key as a
    secret reference and the host); the pod's preflight records that version."""
    from kubernetes.client import (
        V1Container,
        V1EmptyDirVolumeSource,
        V1PersistentVolumeClaimVolumeSource,
        V1Volume,
        V1VolumeMount,
    )

    root = settings.model_mount_path
    if model.is_artifact:
        name = model.checkpoint.rsplit("/", 1)[-1].replace(":", "-")
        path = posixpath.join(root, name)
        mount = V1VolumeMount(name=MODEL_VOLUME, mount_path=root)
        fetch = V1Container(
            name="fetch-model",
            image=settings.image,
            command=[POD_PYTHON, "-m", "evaljobs.cli", "fetch-model", model.checkpoint, "--link", path],
            env=wandb_env,
            volume_mounts=[mount],
        )
        volume = V1Volume(name=MODEL_VOLUME, empty_dir=V1EmptyDirVolumeSource())
        read_only = V1VolumeMount(name=MODEL_VOLUME, mount_path=root, read_only=True)
        return ModelPlacement(path, [volume], [read_only], [fetch])
    if model.checkpoint_kind == "hf_repo":
        raise ModelPlacementError(
            f"checkpoint {model.checkpoint!r} is a Hugging Face repo: in kubernetes mode give a W&B artifact, or a "
            f"folder on the model PVC (kubernetes.model_volume_claim, e.g. a shared HF cache) under {root}"
        )
    if not settings.model_volume_claim:
        raise ModelPlacementError(
            f"checkpoint {model.checkpoint!r} is a folder: set kubernetes.model_volume_claim to the PVC that holds "
            f"it (mounted at kubernetes.model_mount_path={root}), or give a W&B artifact"
        )
    path = posixpath.normpath(model.checkpoint)
    if not path.startswith(root.rstrip("/") + "/"):
        raise ModelPlacementError(
            f"checkpoint {path} is not under kubernetes.model_mount_path={root}, where the model PVC is mounted; "
            "give the folder's path inside the pod"
        )
    volume = V1Volume(
        name=MODEL_VOLUME,
        persistent_volume_claim=V1PersistentVolumeClaimVolumeSource(
            claim_name=settings.model_volume_claim, read_only=True
        ),
    )
    return ModelPlacement(path, [volume], [V1VolumeMount(name=MODEL_VOLUME, mount_path=root, read_only=True)])


def check_serving(folder: str, resources: Resources, shared_server: bool = False) -> None:
    """The one refusal of a cluster server that cannot work: no GPU (the worker image's vLLM needs one), or a
    checkpoint over ``server_resources.max_model_gb`` when its folder is visible from here (a model PVC also
    mounted on the Airflow workers; otherwise the pod's own preflight applies the same limit)."""
    from evaljobs.engine.modelprep import check_folder
    from evaljobs.engine.preflight import size_problem

    if resources.gpus == 0:
        alternative = "" if shared_server else " (or evaluate against a shared VLLMServeOperator server)"
        raise ModelPlacementError(
            "server_resources.gpus must be 1 or 2 in kubernetes mode: the worker image's vLLM needs a GPU" + alternative
        )
    if Path(folder).is_dir() and (problem := size_problem(check_folder(folder), resources, "server_resources")):
        raise ModelPlacementError(problem)
