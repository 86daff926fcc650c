"""Hugging Face hub access of the harnesses: the token handed to them, and refusals of gated datasets worded as
what to do (the hub's own errors say "gated" without naming the token or the way around it)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evaljobs.engine.catalog import Benchmark


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """``os.environ`` with ``values`` set (``None``: left as it is) for the duration, then as it was."""
    given = {name: value for name, value in values.items() if value is not None}
    before = {name: os.environ.get(name) for name in given}
    os.environ.update(given)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def datasets_cache(folder: Path | None) -> Iterator[None]:
    """``datasets``' cache in ``folder`` for the duration (``None``: unchanged), in this process and, through
    ``HF_DATASETS_CACHE``, in the processes it starts.

    The cache key of a local dataset folder does not depend on its files (datasets 5: two mirrors, or one
    updated in place, share a key, and the first one cached is served for both), so a job that reads a mirror
    gets a cache of its own: the mirror's files as they are now."""
    if folder is None:
        yield
        return
    import datasets.config

    before = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = folder
    try:
        with environment(HF_DATASETS_CACHE=str(folder)):
            yield
    finally:
        datasets.config.HF_DATASETS_CACHE = before


def access_problem(exc: BaseException, benchmarks: list[Benchmark], token_secret: str) -> str | None:
    """What to do about a gated dataset the hub refused (HTTP 401 or 403) while loading ``benchmarks``, or
    ``None`` when ``exc`` is something else."""
    from huggingface_hub.errors import GatedRepoError

    chain, seen = [], exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    text = " ".join(map(str, chain))
    gated = next((e for e in chain if isinstance(e, GatedRepoError)), None)
    said = re.search(r"Dataset '([^']+)' is a gated dataset on the Hub", text)  # as datasets words it
    if gated is None and said is None:
        return None
    dataset = said.group(1) if said else "?"
    names = ", ".join(b.name for b in benchmarks if b.dataset == dataset) or ", ".join(b.name for b in benchmarks)
    if gated is not None and gated.response is not None:
        status = gated.response.status_code
    else:  # an error that came back as text (Inspect's)
        status = 403 if "to ask for access" in text else 401
    hub = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    mirror = "or mirror the dataset (datasets.mirror)"
    if status == 403:
        return (
            f"benchmark {names} reads the gated dataset {dataset}, and the hub refused the token in {token_secret} "
            f"(HTTP 403: its account has no access): request access at {hub}/datasets/{dataset} with that "
            f"account (log in, accept the dataset's conditions), {mirror}"
        )
    return (
        f"benchmark {names} reads the gated dataset {dataset}, and the hub refused the request (HTTP {status}: no "
        f"valid token): set the secret {token_secret} (datasets.hf_token_secret) to a Hugging Face token of an "
        f"account with access to {hub}/datasets/{dataset}, {mirror}"
    )
