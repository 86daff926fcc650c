"""The model folder's tokenizer for lm-eval's API models, read with the ``tokenizers`` library.

Hand-written because lm-eval's ``huggingface`` tokenizer backend imports transformers, and with it torch (~3 s
of every job's start-up on these machines), then loads the tokenizer through them (~1.6 s), while the ids are
the same ones the folder's ``tokenizer.json`` gives through ``tokenizers`` in ~0.1 s (transformers' fast
tokenizers are that file in that library). It offers lm-eval's "remote" tokenizer interface (the one lm-eval
uses for a server's ``/tokenize``), without a request per string. Special tokens are added exactly when
lm-eval's huggingface backend adds them (the model's ``add_bos_token``). Chat templates are not rendered here:
a job that applies one to completions requests keeps lm-eval's huggingface backend."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def usable(folder: str | Path) -> bool:
    """Whether ``folder`` has the files this tokenizer reads."""
    return (Path(folder) / "tokenizer.json").is_file()


class FolderTokenizer:
    """``tokenizer.json`` and the special tokens of ``tokenizer_config.json``, as lm-eval's remote tokenizer."""

    def __init__(self, folder: str | Path, add_special_tokens: bool = False):
        from tokenizers import Tokenizer

        folder = Path(folder)
        self._tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config_file = folder / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        self.add_special_tokens = add_special_tokens
        self.eos_token, self.bos_token = _token(config.get("eos_token")), _token(config.get("bos_token"))

    @property
    def eos_token_id(self) -> int | None:
        return self._id(self.eos_token)

    @property
    def bos_token_id(self) -> int | None:
        return self._id(self.bos_token)

    @property
    def eot_token(self) -> int | None:
        return self.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=self.add_special_tokens).ids

    def decode(self, tokens: list[int]) -> str:
        return self._tokenizer.decode(tokens, skip_special_tokens=False)

    def batch_decode(self, tokens_list: list[list[int]]) -> list[str]:
        return self._tokenizer.decode_batch(tokens_list, skip_special_tokens=False)

    def __call__(self, text: str, add_special_tokens: bool = False, **kwargs: Any) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text)}

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self._tokenizer.token_to_id(token)


def _token(value: Any) -> str | None:
    """A special token as tokenizer_config.json gives it: a string, or an AddedToken dict."""
    return value.get("content") if isinstance(value, dict) else value
