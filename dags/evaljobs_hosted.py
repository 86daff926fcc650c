"""Evaluate a hosted OpenAI-compatible model (generative benchmarks); its API key is a team secret named in
the form and resolved through Airflow Variables/Connections (any secrets backend)."""

from __future__ import annotations

from airflow.sdk import Param, dag

from evaljobs.forms import LIMIT_HELP, benchmark_labels, generative_choices
from evaljobs.operators.evaluate import WandbEvalOperator

GENERATIVE = generative_choices()

FORM = {
    "base_url": Param("https://api.openai.com/v1", type="string", pattern=r"^https?://", title="Base URL"),
    "model": Param("gpt-4o-mini", type="string", minLength=1, title="Model name"),
    "api_key_secret": Param(
        "OPENAI_API_KEY", type="string", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", title="Team secret holding the API key"
    ),
    "api": Param(
        "chat",
        type="string",
        enum=["chat", "completions"],
        values_display={"chat": "chat (/v1/chat/completions)", "completions": "completions (/v1/completions)"},
        title="API",
    ),
    "benchmarks": Param(
        ["gsm8k"],
        type="array",
        items={"type": "string", "enum": GENERATIVE},
        examples=GENERATIVE,  # a multi-select in the form; the enum refuses other values
        values_display=benchmark_labels(GENERATIVE),
        minItems=1,
        uniqueItems=True,
        title="Benchmarks (generative)",
    ),
    "limit": Param(20, type="integer", minimum=0, title="Examples per benchmark", description=LIMIT_HELP),
    "project": Param("hosted", type="string", pattern=r"^[A-Za-z0-9][\w.-]{0,127}$", title="Project"),
    "max_tokens": Param(None, type=["null", "integer"], minimum=1, maximum=65536, title="Max new tokens"),
}


@dag(
    dag_id="evaljobs_hosted",
    schedule=None,
    catchup=False,
    tags=["evaljobs", "example"],
    params=FORM,
    render_template_as_native_obj=True,
)
def evaljobs_hosted():
    WandbEvalOperator(
        task_id="evaluate",
        base_url="{{ params.base_url }}",
        model="{{ params.model }}",
        api_key_secret="{{ params.api_key_secret }}",
        api="{{ params.api }}",
        benchmarks="{{ params.benchmarks }}",
        project="{{ params.project }}",
        settings={"limit": "{{ params.limit }}", "max_tokens": "{{ params.max_tokens }}"},
    )


evaljobs_hosted()
