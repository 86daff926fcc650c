"""evaljobs: LLM evaluation jobs (vLLM + lm-evaluation-harness + Weights & Biases) for Apache Airflow."""

__version__ = "0.1.0"


def get_provider_info() -> dict:
    """Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""
    return {
        "package-name": "airflow-provider-evaljobs",
        "name": "evaljobs",
        "description": "Run LLM evaluation jobs on infrastructure you own and record them in Weights & Biases.",
        "versions": [__version__],
    }
