# The verbs people type. Every target installs what it needs first (idempotent).
#   make demo   train + test the tiny hybrid video LM on the synthetic task (CPU, a few minutes)
#   make test   the test suite (GPU tests skip without CUDA)
#   make check  lint, format check, type check
# Environment: an active virtualenv ($VIRTUAL_ENV) is used as is; otherwise ./.venv is created.
# torch: an installed torch is reused; only when none is present is $(TORCH) installed.

TORCH ?= torch==2.13.0
LMMS_EVAL ?= lmms-eval==0.7.3
ifdef VIRTUAL_ENV
VENV := $(VIRTUAL_ENV)
else
VENV := .venv
endif
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.lightning-viper-installed

.PHONY: install demo test test-all check format gpu-test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null && echo "reusing torch $$($(PY) -c 'import torch; print(torch.__version__)')" \
		|| $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,eval]"
	$(PY) -m pip install -q --no-deps "$(LMMS_EVAL)"  # no deps: docs/evaluation.md, "Install"
	@touch $(STAMP)

demo: install
	$(BIN)/lightning fit --config recipes/demo.yaml
	$(BIN)/lightning test --config recipes/demo.yaml --ckpt_path last
	@$(BIN)/viper summary --experiment demo

test: install
	$(PY) -m pytest -q -m "not gpu"

gpu-test: install
	$(PY) -m pytest -q -m gpu

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf .cache checkpoints lightning_logs mlflow.db mlartifacts reports
