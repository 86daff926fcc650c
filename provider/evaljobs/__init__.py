"""evaljobs: LLM evaluation jobs (vLLM + lm-evaluation-harness + Weights & Biases) for Apache Airflow."""

__version__ = "0.1.0"


def get_provider_info() -> dict:
    """Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "airflow-provider-evaljobs",
        "name": "evaljobs",
        "description": "Run LLM evaluation jobs on infrastructure you own and record them in Weights & Biases.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": "Weights & Biases", "external-doc-url": "https://docs.wandb.ai/", "tags": ["service"]}
        ],
        "hooks": [
            {
                "integration-name": "Weights & Biases",
                "python-modules": ["evaljobs.hooks.wandb", "evaljobs.hooks.secrets"],
            },
        ],
        "operators": [
            {
                "integration-name": "Weights & Biases",
                "python-modules": [
                    "evaljobs.operators.evaluate",
                    "evaljobs.operators.pod",
                    "evaljobs.operators.serve",
                    "evaljobs.operators.publish",
                    "evaljobs.operators.compare",
                    "evaljobs.operators.merge",
                ],
            },
        ],
        "sensors": [{"integration-name": "Weights & Biases", "python-modules": ["evaljobs.sensors.leaderboard"]}],
        "triggers": [{"integration-name": "Weights & Biases", "python-modules": ["evaljobs.triggers.leaderboard"]}],
        "extra-links": ["evaljobs.operators.links.WandbRunsLink", "evaljobs.operators.links.LeaderboardLink"],
        "connection-types": [
            {"connection-type": "wandb", "hook-class-name": "evaljobs.hooks.wandb.WandbHook"},
        ],
    }
