"""Team secrets in pods: environment variables that reference Kubernetes Secrets, never values."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from airflow.exceptions import AirflowException

if TYPE_CHECKING:
    from kubernetes.client import V1EnvVar

    from evaljobs.kubernetes.settings import KubernetesSettings


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
