"""Build what the operators would submit, without a cluster: the pod from KubernetesPodOperator's own
``build_pod_request_obj(dry_run=True)``, serialised by the Kubernetes client and validated in strict mode."""

import json

KUBERNETES_VERSION = "1.33.0"


class TI:
    map_index = 0


CONTEXT = {"run_id": "manual__2026-11-26T10:00:00+00:00", "ti": TI()}


def validated(manifest: dict) -> dict:
    import kubernetes_validate

    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    return manifest


def pod_manifest(operator) -> dict:
    """The validated pod manifest that ``operator`` (a WandbEvalPodOperator) would submit."""
    from kubernetes.client import ApiClient

    operator.prepare_pod(CONTEXT)
    pod = operator.build_pod_request_obj(dry_run=True)
    return validated(ApiClient().sanitize_for_serialization(pod))


def job_spec_of(manifest: dict) -> dict:
    """The job spec the pod's evaluation container reads (its downward-API file comes from this annotation)."""
    return json.loads(manifest["metadata"]["annotations"]["evaljobs.io/spec"])


def containers(manifest: dict, kind: str = "containers") -> dict:
    return {c["name"]: c for c in manifest["spec"].get(kind) or []}


def volumes(manifest: dict) -> dict:
    return {v["name"]: v for v in manifest["spec"]["volumes"]}
