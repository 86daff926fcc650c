"""Object-store credentials for a results home on ``s3://`` from an Airflow connection of type ``aws`` (the
Amazon provider's: login = access key id, password = secret access key, extra ``endpoint_url`` and
``region_name``), handed to a job as the standard AWS variables. Values are masked in task logs as soon as
they are read, and reach a local child process as its environment only (pods: Kubernetes ``secretKeyRef``)."""

from __future__ import annotations

from airflow.sdk import BaseHook

# The connection's parts -> the variables boto3 and s3fs read.
VARIABLES = {
    "login": "AWS_ACCESS_KEY_ID",
    "password": "AWS_SECRET_ACCESS_KEY",
    "endpoint_url": "AWS_ENDPOINT_URL",
    "region_name": "AWS_REGION",
}


class ObjectStoreCredentialsHook(BaseHook):
    """The standard AWS variables from the connection ``conn_id``; none when it does not exist (the job then uses
    its own environment: the worker's variables, an instance role or a pod's service account)."""

    hook_name = "evaljobs object store"

    def __init__(self, conn_id: str = "aws_default") -> None:
        super().__init__()
        self.conn_id = conn_id

    def env(self) -> dict[str, str]:
        from airflow.sdk.exceptions import AirflowNotFoundException
        from airflow.sdk.log import mask_secret

        try:
            conn = self.get_connection(self.conn_id)
        except AirflowNotFoundException:
            return {}
        extra = conn.extra_dejson or {}
        values = {"login": conn.login, "password": conn.password} | {
            key: extra.get(key) for key in ("endpoint_url", "region_name")
        }
        if values["password"]:
            mask_secret(values["password"])
        return {VARIABLES[key]: str(value) for key, value in values.items() if value}
