"""Where and how evaluation pods run on the cluster: the ``kubernetes`` argument of the operators."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

WORKER_IMAGE = "evaljobs/worker:0.1.0-vllm0.32.0"  # built from images/worker
K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SECRET_REF = re.compile(r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?(/[-._a-zA-Z0-9]+)?$")


class KubernetesSettings(BaseModel):
    """Cluster placement, volumes and secret references of the evaluation pods (no secret value ever).

    ``node_selector``, ``tolerations`` and ``affinity`` place the pods that hold GPUs (vLLM); pods without a
    GPU (hosted models, evaluations against a shared server) use the cluster's default placement.
    ``secrets`` maps a team secret name (``WANDB_API_KEY``, a hosted model's ``api_key_secret``) to the
    Kubernetes Secret holding it: ``"secret-name"`` (key = the team secret's name) or ``"secret-name/key"``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(WORKER_IMAGE, min_length=1, description="the worker image (vLLM + evaljobs)")
    namespace: str = "default"
    service_account: str | None = None
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] | None = None
    priority_class: str | None = None
    secrets: dict[str, str] = Field(default_factory=dict, description="team secret name -> 'k8s-secret[/key]'")
    model_volume_claim: str | None = Field(None, description="PVC holding model folders (or a HF cache)")
    model_mount_path: str = Field("/models", pattern=r"^/")
    results_volume_claim: str | None = Field(None, description="PVC for the results home; None = pod-local")
    dataset_mirror_claim: str | None = Field(
        None, description="PVC holding a dataset mirror (datasets.mirror), mounted read-only; None = the hub"
    )
    run_as_user: int = Field(1000, ge=1, description="the worker image's non-root user; also the volumes' group")
    vllm_port: int = Field(8000, ge=1024, le=65535)
    shm_gib: float = Field(8.0, gt=0, le=512, description="/dev/shm for vLLM, per GPU")
    kubernetes_conn_id: str = "kubernetes_default"
    startup_timeout: int = Field(
        1800, ge=30, description="seconds to schedule the pod and fetch the model; vLLM start-up is added"
    )

    @field_validator(
        "namespace",
        "service_account",
        "priority_class",
        "model_volume_claim",
        "results_volume_claim",
        "dataset_mirror_claim",
    )
    @classmethod
    def _k8s_name(cls, value: str | None) -> str | None:
        if value is not None and not K8S_NAME.match(value):
            raise ValueError(f"{value!r} is not a Kubernetes name; use lower-case letters, digits and '-'")
        return value

    @field_validator("secrets")
    @classmethod
    def _secret_refs(cls, refs: dict[str, str]) -> dict[str, str]:
        bad = [f"{name}={ref!r}" for name, ref in refs.items() if not SECRET_REF.match(ref)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: give 'secret-name' or 'secret-name/key' of a Kubernetes Secret")
        return refs

    @property
    def security_context(self) -> dict[str, Any]:
        """The pods' security context: non-root, volumes writable by the image's user."""
        return {"runAsNonRoot": True, "runAsUser": self.run_as_user, "fsGroup": self.run_as_user}

    def secret_ref(self, name: str) -> tuple[str, str] | None:
        """The (Kubernetes Secret, key) holding team secret ``name``, or None when it is not mapped."""
        ref = self.secrets.get(name)
        if ref is None:
            return None
        secret, _, key = ref.partition("/")
        return secret, key or name
