"""The ``wandb`` connection: API key, optional host of a dedicated or self-hosted W&B server, entity."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from evaljobs.engine.tracking import WandbTarget

PUBLIC_HOST = "https://api.wandb.ai"


@dataclass(frozen=True)
class WandbCredentials:
    """What the engine needs to reach W&B; the key never shows in a repr or a log line."""

    api_key: str | None = field(repr=False)
    host: str = PUBLIC_HOST
    entity: str | None = None

    @property
    def offline(self) -> bool:
        """Without a key, runs are written offline and can be synced later with ``wandb sync``."""
        return not self.api_key


class WandbHook(BaseHook):
    """Weights & Biases credentials from an Airflow connection of type ``wandb``.

    The API key is the connection's password, the host its host (empty = W&B's public cloud), the entity
    ``extra["entity"]``. Credentials are returned to the caller, never written to ``os.environ``.
    """

    conn_name_attr = "wandb_conn_id"
    default_conn_name = "wandb_default"
    conn_type = "wandb"
    hook_name = "Weights & Biases"

    def __init__(self, wandb_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.wandb_conn_id = wandb_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port", "login"],
            "relabeling": {"password": "API key", "host": "Host (dedicated or self-hosted W&B; empty for wandb.ai)"},
            "placeholders": {"host": PUBLIC_HOST, "extra": json.dumps({"entity": "my-team"})},
        }

    @cached_property
    def credentials(self) -> WandbCredentials:
        from airflow.sdk.log import mask_secret

        conn = self.get_connection(self.wandb_conn_id)
        if conn.password:
            mask_secret(conn.password)
        host = conn.host or PUBLIC_HOST
        if not host.startswith(("http://", "https://")):
            host = f"https://{host}"
        return WandbCredentials(conn.password or None, host.rstrip("/"), conn.extra_dejson.get("entity"))

    def target(self, mode: str = "auto") -> WandbTarget:
        """The engine's W&B target; without the connection, offline runs under the results home."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        from evaljobs.engine.tracking import WandbTarget

        try:
            creds = self.credentials
        except AirflowNotFoundException:
            self.log.info("no connection %r: W&B runs are written offline", self.wandb_conn_id)
            return WandbTarget(mode=mode)
        host = None if creds.host == PUBLIC_HOST else creds.host
        return WandbTarget(creds.api_key, host, creds.entity, mode)

    def env(self, mode: str = "auto") -> dict[str, str]:
        """What an ``evaljobs`` child process needs: the key (masked in logs) and host, as its environment."""
        target = self.target(mode)
        env = {"WANDB_API_KEY": target.api_key, "WANDB_BASE_URL": target.host, "WANDB_ENTITY": target.entity}
        return {k: v for k, v in env.items() if v}

    def test_connection(self) -> tuple[bool, str]:
        """Ask the W&B server who the key belongs to."""
        import wandb

        creds = self.credentials
        if creds.offline:
            return False, "no API key: set the connection's password to a W&B API key"
        try:
            viewer = wandb.Api(api_key=creds.api_key, overrides={"base_url": creds.host}, timeout=15).viewer
        except Exception as exc:  # wandb raises many types for auth and network errors
            return False, f"W&B at {creds.host} did not accept the key: {type(exc).__name__}: {exc}"
        return True, f"connected to {creds.host} as {viewer.username}"
