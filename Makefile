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
# 00-05 share one synthetic set and split (same size and sample); 04 fine-tunes DenseNet121
# only; 06-07 use the from-scratch CNN, which learns in a few CPU epochs. The five backbones
# use WEIGHTS synthetic: pretrained by cxrlib on a synthetic source task (not ImageNet, which
# needs the internet), once, into the cache (~/.cache/cxrlib/pretrained or $CXR_PRETRAINED_DIR);
# a second `make demo` reuses it.
DEMO_DIRS := -p RESULTS_DIR $(CURDIR)/$(OUT)/results -p FIGURES_DIR $(CURDIR)/figures
DEMO_DATA := -p IMAGE_SIZE 64 -p SAMPLES_PER_CLASS 60 -p EPOCHS 3 -p WEIGHTS synthetic

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
	$(BIN)/python -m cxrlib pretrain --backbone course --image-size 64
	$(BIN)/python -m cxrlib notebooks --out $(OUT)/notebooks --only 00 01 02 03 $(DEMO_DIRS) $(DEMO_DATA)
	$(BIN)/python -m cxrlib notebooks --out $(OUT)/notebooks --only 04 $(DEMO_DIRS) $(DEMO_DATA) \
		-p FINETUNE_BACKBONES densenet121
	$(BIN)/python -m cxrlib notebooks --out $(OUT)/notebooks --only 05 $(DEMO_DIRS) $(DEMO_DATA)
	$(BIN)/python -m cxrlib notebooks --out $(OUT)/notebooks --only 06 07 $(DEMO_DIRS) \
		-p BACKBONE scratch -p VARIANT scratch -p IMAGE_SIZE 64 -p SAMPLES_PER_CLASS 100 \
		-p EPOCHS 8 -p WEIGHTS none
	$(BIN)/python -m cxrlib report $(OUT)/results --out $(OUT)/report

notebooks: $(STAMP)
	$(BIN)/python -m cxrlib notebooks --out $(OUT)/notebooks $(if $(DATA),-p DATA_DIR $(abspath $(DATA)))

notebooks-smoke: $(STAMP)
	CXR_SMOKE=1 CXR_SMOKE_DIR=$(CURDIR)/$(OUT)/smoke $(BIN)/python -m cxrlib notebooks --smoke --out $(OUT)/smoke/notebooks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_metrics.py

clean:
	rm -rf $(OUT) .pytest_cache
