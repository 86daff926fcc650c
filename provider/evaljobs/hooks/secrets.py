"""Team secrets (``OPENAI_API_KEY``, ``HF_TOKEN``, a hosted model's key under any name) resolved through
Airflow's own Variables and Connections, hence through whatever secrets backend the deployment configured
(Vault, AWS/GCP secret managers, environment variables). Values are masked in task logs as soon as they are
read and handed on only as environment for a child process, never through XCom or templates."""

from __future__ import annotations

from collections.abc import Iterable

from airflow.exceptions import AirflowException
from airflow.sdk import BaseHook


class MissingSecretsError(AirflowException):
    """One or more team secrets are not set; the message lists each and how to add it."""


class TeamSecretsHook(BaseHook):
    """Resolve named secrets: an Airflow Variable of that name, else the password of a Connection with that id."""

    hook_name = "Team secrets"

    def get(self, name: str) -> str | None:
        """The secret's value (masked from now on in task logs), or None when it is not set."""
        from airflow.sdk import Connection, Variable
        from airflow.sdk.exceptions import AirflowNotFoundException
        from airflow.sdk.log import mask_secret

        value = Variable.get(name, default=None)
        if value is None:
            try:
                value = Connection.get(name).password
            except AirflowNotFoundException:
                value = None
        if value:
            mask_secret(value)  # no name: a name that does not look sensitive would disable the mask
        return value or None

    def require(self, names: Iterable[str]) -> dict[str, str]:
        """Every named secret, or one :class:`MissingSecretsError` listing all that are missing."""
        values = {name: self.get(name) for name in dict.fromkeys(names)}
        missing = [name for name, value in values.items() if value is None]
        if missing:
            how = "; ".join(f"AIRFLOW_VAR_{n}=... or `airflow variables set {n} ...`" for n in missing)
            raise MissingSecretsError(
                f"missing team secrets: {', '.join(missing)}. Add each as an Airflow Variable or as a Connection "
                f"of that id holding the value as its password (any secrets backend works): {how}"
            )
        return values  # type: ignore[return-value]

    def as_env(self, names: Iterable[str]) -> dict[str, str]:
        """The secrets as environment variables for a child process (never this process's environment)."""
        return self.require(names)
