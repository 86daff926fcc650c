"""What DAG files build their forms and defaults from: the benchmark names this installation offers and the
embedded model. Part of the provider's public API, with the operators, the sensor and the hooks."""

from __future__ import annotations

from pathlib import Path


def benchmark_choices() -> list[str]:
    """The catalog benchmarks a form offers (see :func:`evaljobs.engine.catalog.runnable_names`)."""
    from evaljobs.engine.catalog import runnable_names

    return runnable_names()


def generative_choices() -> list[str]:
    """The ones a hosted chat model can take: scored generatively."""
    from evaljobs.engine.catalog import generative_names

    return generative_names()


def benchmark_labels(names: list[str], width: int = 72) -> dict[str, str]:
    """What a form's pick-list shows for each of ``names`` (its ``values_display``): the name, the category
    and the start of the catalog's description, at most ``width`` characters."""
    from evaljobs.engine.catalog import entries

    labels = {}
    for name in names:
        entry = entries()[name]
        text = entry.get("description", "")
        label = f"{name} ({entry['category']}): {text.partition(': ')[2] or text}"
        labels[name] = label if len(label) <= width else label[: width - 1].rstrip() + "…"
    return labels


def embedded_model() -> Path:
    """The folder of the embedded SmolLM2-135M-Instruct (``evaljobs prepare-model`` writes it there)."""
    return results_home() / "models" / "smollm2-135m-instruct"


def results_home() -> Path:
    """Where jobs keep results, request caches and reports: ``$EVALJOBS_HOME`` or ``~/.evaljobs``."""
    from evaljobs.engine.spec import default_results_home

    return default_results_home()


LIMIT_HELP = (
    "0 = all. Too few examples cannot tell two checkpoints apart: with 0/1 scores and 20 % of answers "
    "differing, 40 examples detect a 19.5-point difference (80 % power, 5 %), 100 detect 12.8, 20 none. "
    "`evaljobs plan --benchmarks ... --limit N` computes it for yours."
)
"""The help of a form's limit field. Its numbers are :func:`evaljobs.engine.stats.mde`'s (a test keeps them
so); computing them here would import scipy into every DAG parse."""
