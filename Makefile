# Two commands matter: `make demo` (the main job, on the synthetic default) and `make test`.
# Both create .venv and install everything on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= outputs
DATA   ?=
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

# Demo settings: the whole series on the synthetic default in under 30 minutes on 2 CPU cores.
DEMO_PARAMS := -p IMAGE_SIZE 96 -p SAMPLES_PER_CLASS 100 -p EPOCHS 3 -p WEIGHTS none \
               -p RESULTS_DIR $(CURDIR)/$(OUT)/results -p FIGURES_DIR $(CURDIR)/figures

.PHONY: install test test-fast demo notebooks notebooks-smoke bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

# The whole suite: unit tests, every notebook in smoke mode (papermill), then nbval.
test: $(STAMP)
	$(BIN)/python -m pytest
	CXR_SMOKE=1 CXR_SMOKE_DIR=$(CURDIR)/$(OUT)/nbval $(BIN)/python -m pytest --nbval-lax notebooks/

# Unit tests only, without the slow ones: the inner loop while developing.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

demo: $(STAMP)
	$(BIN)/python -m cxrlib notebooks --out $(OUT)/notebooks $(DEMO_PARAMS)
	$(BIN)/python -m cxrlib report $(OUT)/results --out $(OUT)/report

notebooks: $(STAMP)
	$(BIN)/python -m cxrlib notebooks --out $(OUT)/notebooks $(if $(DATA),-p DATA_DIR $(abspath $(DATA)))

notebooks-smoke: $(STAMP)
	CXR_SMOKE=1 CXR_SMOKE_DIR=$(CURDIR)/$(OUT)/smoke $(BIN)/python -m cxrlib notebooks --smoke --out $(OUT)/smoke/notebooks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_training.py

clean:
	rm -rf $(OUT) .pytest_cache
