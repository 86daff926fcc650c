"""Canary values for every secret the example DAGs can take."""

import secrets

import pytest


@pytest.fixture
def canaries(api_key) -> dict[str, str]:
    """The hosted model's key (the session server's own canary key), the W&B key, judge key and HF token."""
    return {
        "TEAM_LLM_KEY": api_key,
        "WANDB_API_KEY": "canary-wandb-" + secrets.token_hex(8),
        "OPENAI_API_KEY": "canary-judge-" + secrets.token_hex(8),
        "HF_TOKEN": "canary-hf-" + secrets.token_hex(8),
    }
