"""Team secrets in pods: environment variables that reference Kubernetes Secrets, never values."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow.exceptions import AirflowException

if TYPE_CHECKING:
    from kubernetes.client import V1EnvVar

    from evaljobs.kubernetes.settings import KubernetesSettings

log = logging.getLogger(__name__)


class UnmappedSecretsError(AirflowException):
    """A secret the pod needs has no Kubernetes Secret mapped in ``kubernetes.secrets``."""


def secret_env(names: Iterable[str], settings: KubernetesSettings) -> list[V1EnvVar]:
    """One ``secretKeyRef`` variable per team secret name; one error lists every unmapped name and the fix."""
    from kubernetes.client import V1EnvVar, V1EnvVarSource, V1SecretKeySelector

    names = list(dict.fromkeys(names))
    missing = [name for name in names if settings.secret_ref(name) is None]
    if missing:
        example = ", ".join(f'"{name}": "evaljobs-secrets/{name}"' for name in missing)
        raise UnmappedSecretsError(
            f"secrets {', '.join(missing)} have no Kubernetes Secret: pods receive secrets only as references. "
            f"Create the Secret (kubectl create secret generic evaljobs-secrets --from-literal=NAME=...) and map "
            f"it in kubernetes={{'secrets': {{{example}}}}}"
        )
    env = []
    for name in names:
        secret, key = settings.secret_ref(name)
        source = V1EnvVarSource(secret_key_ref=V1SecretKeySelector(name=secret, key=key))
        env.append(V1EnvVar(name=name, value_from=source))
    return env


class MissingSecretError(AirflowException):
    """A Kubernetes Secret (or one of its keys) that a pod references does not exist."""


def secret_refs(*objects: Any) -> dict[str, dict[str, str]]:
    """The Kubernetes Secrets that ``objects`` (client models or manifests) reference by ``secretKeyRef``:
    ``{secret: {key: environment variable}}``."""
    from kubernetes.client import ApiClient

    refs: dict[str, dict[str, str]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = (node.get("valueFrom") or {}).get("secretKeyRef")
            if ref and not ref.get("optional"):
                refs.setdefault(ref["name"], {})[ref["key"]] = node["name"]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(ApiClient().sanitize_for_serialization(list(objects)))
    return refs


def check_secrets(refs: dict[str, dict[str, str]], namespace: str, core: Any) -> None:
    """Refuse, before anything is submitted, a referenced Secret or key that is missing from ``namespace``.
    Only the Secrets' key names are looked at (``core``: CoreV1Api); without RBAC to read Secrets (HTTP 403)
    the check is skipped with a warning."""
    from kubernetes.client.exceptions import ApiException

    problems = []
    for secret, keys in sorted(refs.items()):
        try:
            present = set(core.read_namespaced_secret(secret, namespace).data or {})  # names only, values dropped
        except ApiException as exc:
            if exc.status != 404:
                log.warning(
                    "could not check that the Kubernetes Secrets %s exist in namespace %s (HTTP %s %s%s): a "
                    "missing one will stop the pod with CreateContainerConfigError",
                    ", ".join(sorted(refs)),
                    namespace,
                    exc.status,
                    exc.reason,
                    "; reading them needs RBAC 'get' on secrets" if exc.status == 403 else "",
                )
                return
            literals = " ".join(f"--from-literal={key}=..." for key in sorted(keys))
            problems.append(
                f"Kubernetes Secret {secret!r} does not exist in namespace {namespace!r} (it holds "
                f"{_mapped(keys)}); create it: kubectl create secret generic {secret} -n {namespace} {literals}"
            )
            continue
        for key in sorted(set(keys) - present):
            problems.append(
                f"Kubernetes Secret {secret!r} in namespace {namespace!r} has no key {key!r} (it holds "
                f"{_mapped({key: keys[key]})}); add it: kubectl patch secret {secret} -n {namespace} --type merge "
                f'-p \'{{"stringData": {{"{key}": "..."}}}}\', or map {keys[key]} to the key that holds it'
            )
    if problems:
        raise MissingSecretError("secrets the pod needs are missing:\n" + "\n".join(f"  - {p}" for p in problems))


def _mapped(keys: dict[str, str]) -> str:
    return ", ".join(f"{name} via kubernetes.secrets[{name!r}]" for name in sorted(keys.values()))
