"""Exceptions of the engine. Each message names what to change; the Airflow layer shows them unchanged."""


class EvalJobsError(Exception):
    """Base class: a problem the user can fix, described in one message."""


class SpecError(EvalJobsError, ValueError):
    """The job description is invalid. ``problems`` lists one ``field: message`` line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid evaluation job:\n" + "\n".join(f"  - {p}" for p in problems))


class CustomBenchmarkError(SpecError):
    """A custom benchmark file is invalid; the message names the file and the YAML key."""

    def __init__(self, path: object, key: str, message: str):
        self.path, self.key = str(path), key
        super().__init__([f"{path}: {key}: {message}"])


class PreflightError(EvalJobsError):
    """Checks before any server is started failed (missing secret, unloadable model, dead endpoint).
    ``problems`` lists each with its fix."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else problems
        if len(self.problems) == 1:
            super().__init__(self.problems[0])
        else:
            lines = (p.replace("\n", "\n    ") for p in self.problems)
            super().__init__(
                f"the job cannot start ({len(self.problems)} problems):\n" + "\n".join(f"  - {p}" for p in lines)
            )


class ServingError(EvalJobsError):
    """The vLLM server did not start or died; the message carries the tail of its log."""


class HarnessError(EvalJobsError):
    """The evaluation itself failed; partial results stay in the job's work folder."""


class EndpointError(HarnessError):
    """Requests to the model endpoint kept failing past their retries; names the endpoint and the last error."""
