"""The evaluation pod of one job, as the pod attributes of a KubernetesPodOperator
(:class:`~evaljobs.operators.pod.WandbEvalPodOperator` sets them when its task runs): the same ``evaljobs run``
command as local mode, reading its spec from a pod annotation and writing its summary to the XCom sidecar's
file."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from evaljobs.kubernetes.model import ModelPlacement, check_serving, place_model
from evaljobs.kubernetes.secrets import secret_env
from evaljobs.kubernetes.vllm import POD_PYTHON, shm_volume, vllm_container

if TYPE_CHECKING:
    from evaljobs.engine.spec import JobSpec
    from evaljobs.engine.tracking import WandbTarget
    from evaljobs.kubernetes.settings import KubernetesSettings

SPEC_ANNOTATION = "evaljobs.io/spec"
SPEC_DIR, SPEC_FILE = "/etc/evaljobs", "/etc/evaljobs/spec.json"
XCOM_FILE = "/airflow/xcom/return.json"  # read by KubernetesPodOperator's XCom sidecar
RESULTS_DIR = "/var/lib/evaljobs"
# What a results home on s3:// reads (a pod may instead get them from its service account, e.g. IRSA).
OBJECT_STORE_SECRETS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
)
MIRROR_DIR = "/var/lib/evaljobs-mirror"
JOB_LABEL, BENCHMARK_LABEL = "evaljobs.io/job", "evaljobs.io/benchmark"
SHARD_LABEL = "evaljobs.io/shard"  # a shard job's "<k>-of-<N>" (0-based k)


def label_value(text: str) -> str:
    """``text`` as a valid label value: at most 63 of ``[A-Za-z0-9._-]``, alphanumeric at both ends."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", text)[-63:].strip("._-") or "none"


def wandb_env(target: WandbTarget) -> tuple[dict[str, str], list[str]]:
    """The pod's W&B host and entity (plain values), and ``["WANDB_API_KEY"]`` when runs are logged online
    (the key then comes from its Kubernetes Secret)."""
    plain = {"WANDB_BASE_URL": target.host, "WANDB_ENTITY": target.entity}
    online = target.mode != "disabled" and not target.offline
    return {k: v for k, v in plain.items() if v}, ["WANDB_API_KEY"] if online else []


def evaluation_pod(
    spec: JobSpec,
    settings: KubernetesSettings,
    *,
    plain_env: Mapping[str, str] | None = None,
    secret_names: Sequence[str] = (),
) -> dict[str, Any]:
    """The pod for ``spec``, as KubernetesPodOperator attribute values (``name``, ``image``, ``cmds``,
    ``env_vars``, ``volumes``, ``init_containers``, ``labels``, placement, ...; client models, already converted).
    A checkpoint gets vLLM as a native sidecar on localhost (or, when ``spec`` names a shared server's endpoint,
    no GPU at all); a hosted model gets no GPU and no sidecar. Everything that can be refused (placement, size,
    unmapped secrets) is refused here, before anything is submitted."""
    from airflow.providers.cncf.kubernetes.backcompat.backwards_compat_converters import (
        convert_affinity,
        convert_toleration,
    )
    from kubernetes.client import V1VolumeMount

    from evaljobs.engine.command import run_command

    plain_env = dict(plain_env or {})
    env = secret_env(secret_names, settings)
    if spec.destination.results_url:  # object storage: the AWS variables mapped in `secrets`, by reference only
        env += secret_env(
            [n for n in OBJECT_STORE_SECRETS if settings.secret_ref(n) and n not in secret_names], settings
        )
    model, resources = spec.model, spec.resources
    serves = not model.hosted and not model.endpoint  # this pod runs vLLM on its own GPUs
    placement, init_containers, gpu_volumes = ModelPlacement(path=""), [], []
    if not model.hosted:
        fetch_env = secret_env(["WANDB_API_KEY"], settings) + plain_env_vars(plain_env) if model.is_artifact else []
        placement = place_model(model, settings, fetch_env)
        init_containers += placement.init_containers
    endpoint = model.base_url or model.endpoint
    if serves:
        check_serving(placement.path, resources)
        endpoint = f"http://127.0.0.1:{settings.vllm_port}/v1"
        init_containers.append(
            vllm_container(placement.path, model.display_name, resources, settings, placement.mounts, sidecar=True)
        )
        gpu_volumes.append(shm_volume(resources, settings))

    # Paths of the worker mean nothing in the pod: the results home and the mirror are the pod's mounts.
    pod_spec = spec.model_dump(
        mode="json", exclude_none=True, exclude={"destination": {"results_home"}, "datasets": {"mirror"}}
    )
    volumes = [_spec_volume(), _results_volume(settings), *placement.volumes, *gpu_volumes]
    if placement.path:  # an artifact stays the checkpoint (its version is recorded), served from its folder
        where = {"folder": placement.path} if model.is_artifact else {"checkpoint": placement.path}
        pod_spec["model"] |= where | {"endpoint": endpoint, "model": model.display_name}
    mounts = [
        V1VolumeMount(name="spec", mount_path=SPEC_DIR, read_only=True),
        V1VolumeMount(name="results", mount_path=RESULTS_DIR),
        *placement.mounts,
    ]
    if settings.dataset_mirror_claim:
        volumes.append(_mirror_volume(settings.dataset_mirror_claim))
        mounts.append(V1VolumeMount(name="dataset-mirror", mount_path=MIRROR_DIR, read_only=True))
        pod_spec["datasets"]["mirror"] = MIRROR_DIR
    benchmark = spec.benchmarks[0] if len(spec.benchmarks) == 1 else "several"
    sharded = spec.settings.shard is not None
    shard = f"{spec.settings.shard}-of-{spec.settings.shards}" if sharded else ""
    suffix = f"-{shard}" if sharded else ""
    serving = {  # GPU placement only for the pod that holds GPUs: the others must not occupy GPU nodes
        "node_selector": dict(settings.node_selector) if serves else {},
        "tolerations": [convert_toleration(t) for t in settings.tolerations] if serves else [],
        "affinity": convert_affinity(settings.affinity) if serves and settings.affinity else {},
    }
    return serving | {
        "namespace": settings.namespace,
        "name": f"evaljobs-{label_value(benchmark).lower().replace('_', '-').replace('.', '-')[:40]}{suffix}",
        "image": settings.image,
        "cmds": run_command(SPEC_FILE, XCOM_FILE, POD_PYTHON),
        "env_vars": [*plain_env_vars({"EVALJOBS_HOME": RESULTS_DIR, "PYTHONUNBUFFERED": "1"} | plain_env), *env],
        "volumes": volumes,
        "volume_mounts": mounts,
        "init_containers": init_containers,
        "labels": {"app.kubernetes.io/name": "evaljobs", JOB_LABEL: label_value(spec.job_id)}
        | {BENCHMARK_LABEL: label_value(benchmark)}
        | ({SHARD_LABEL: shard} if shard else {}),
        "annotations": {
            SPEC_ANNOTATION: json.dumps(pod_spec, sort_keys=True),
            "evaljobs.io/benchmarks": ",".join(spec.benchmarks),
        },
        "priority_class_name": settings.priority_class,
        "service_account_name": settings.service_account,
        "security_context": settings.security_context,
        "startup_timeout_seconds": settings.startup_timeout + int(resources.startup_timeout),
    }


def plain_env_vars(values: Mapping[str, str]) -> list[Any]:
    """Environment variables with literal values: for what is not secret (hosts, paths)."""
    from kubernetes.client import V1EnvVar

    return [V1EnvVar(name=k, value=v) for k, v in values.items()]


def _spec_volume() -> Any:
    """The job spec annotation as the file ``spec.json`` (downward API): no ConfigMap to create or delete."""
    from kubernetes.client import V1DownwardAPIVolumeFile, V1DownwardAPIVolumeSource, V1ObjectFieldSelector, V1Volume

    field = V1ObjectFieldSelector(field_path=f"metadata.annotations['{SPEC_ANNOTATION}']")
    source = V1DownwardAPIVolumeSource(items=[V1DownwardAPIVolumeFile(path="spec.json", field_ref=field)])
    return V1Volume(name="spec", downward_api=source)


def _results_volume(settings: KubernetesSettings) -> Any:
    """The results home: the ``results_volume_claim`` PVC, or an emptyDir (W&B and XCom keep the results)."""
    from kubernetes.client import V1EmptyDirVolumeSource, V1PersistentVolumeClaimVolumeSource, V1Volume

    if settings.results_volume_claim:
        claim = V1PersistentVolumeClaimVolumeSource(claim_name=settings.results_volume_claim)
        return V1Volume(name="results", persistent_volume_claim=claim)
    return V1Volume(name="results", empty_dir=V1EmptyDirVolumeSource())


def _mirror_volume(claim: str) -> Any:
    from kubernetes.client import V1PersistentVolumeClaimVolumeSource, V1Volume

    return V1Volume(
        name="dataset-mirror",
        persistent_volume_claim=V1PersistentVolumeClaimVolumeSource(claim_name=claim, read_only=True),
    )
