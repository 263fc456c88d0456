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

# Demo settings: the whole series on the synthetic default on 2 CPU cores (how long: docs/results.md).
# 00-05 share one synthetic set and split (same size and sample); 04 fine-tunes DenseNet121
# only; 06-07 use the from-scratch CNN, which learns in a few CPU epochs; 08 (the Kermany
# courses) runs at the demo settings like 00-05. The five backbones
# use WEIGHTS synthetic: pretrained by cxrlib on a synthetic source task (not ImageNet, which
# needs the internet), once, into the cache (~/.cache/cxrlib/pretrained or $CXR_PRETRAINED_DIR);
# a second `make demo` reuses it. FINETUNE_LR 0.001: the fine-tuning runs (V3, FINETUNE_BACKBONES)
# at the common advice instead of the course's 0.01, which scrambles a few hundred films' features.
DEMO_DIRS := -p RESULTS_DIR $(abspath $(OUT))/results -p FIGURES_DIR $(CURDIR)/figures
DEMO_DATA := -p IMAGE_SIZE 64 -p SAMPLES_PER_CLASS 100 -p EPOCHS 10 -p WEIGHTS synthetic
# 03-05 fine-tune; 00-02 and 08 have no FINETUNE_LR (a parameter no notebook of a run defines is an error)
DEMO_TUNE := $(DEMO_DATA) -p FINETUNE_LR 0.001

.PHONY: install lint test test-fast nbval demo notebooks notebooks-smoke bench clean

# The library with the course's packages (Jupyter, papermill, nbval) and the tests' (pytest,
# ruff): the extras [course] and [test] in pyproject.toml. `pip install .` alone is the library.
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[course,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

install: $(STAMP)

# The whole suite: unit tests and every notebook once, in smoke mode, through nbval
# (tests/test_notebooks.py runs `CXR_SMOKE=1 pytest --nbval-lax notebooks/` and checks that
# each cell ran without an error, quietly, and that each notebook left what it must).
# One pytest worker per core (pytest-xdist), each test module on one worker, so a module's
# fixtures (the notebook series, the synthetic sets) are built once. TEST_WORKERS=0: one process.
TEST_WORKERS ?= auto
test: $(STAMP) lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope

# The linter (ruff: pyflakes, bugbear, import order; pyproject.toml), on the code and the notebooks.
lint: $(STAMP)
	$(BIN)/ruff check .

# Unit tests only, without the slow ones: the inner loop while developing.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

# The series through nbval as a reviewer runs it, in smoke mode; results in $(OUT)/smoke.
nbval: $(STAMP)
	CXR_SMOKE=1 CXR_SMOKE_DIR=$(abspath $(OUT))/smoke $(BIN)/python -m pytest --nbval-lax notebooks/

# It ends with what it showed (cxrlib/course/summary.py): the lesson's table, whether each
# lesson held, how long it took and what to open next.
NOTEBOOKS = $(BIN)/python -m cxrlib notebooks --out $(OUT)/notebooks $(DEMO_DIRS)
demo: DEMO_START := $(shell date +%s)
demo: $(STAMP)
	$(BIN)/python -m cxrlib pretrain --backbone course --image-size 64
	$(NOTEBOOKS) --only 00 01 02 $(DEMO_DATA)
	$(NOTEBOOKS) --only 03 $(DEMO_TUNE)
	$(NOTEBOOKS) --only 04 $(DEMO_TUNE) -p FINETUNE_BACKBONES densenet121
	$(NOTEBOOKS) --only 05 $(DEMO_TUNE) -p SCORE_IMAGES 48
	$(NOTEBOOKS) --only 06 07 -p BACKBONE scratch -p IMAGE_SIZE 64 -p SAMPLES_PER_CLASS 100 \
		-p EPOCHS 8 -p WEIGHTS none
	$(NOTEBOOKS) --only 08 $(DEMO_DATA)
	$(BIN)/python -m cxrlib report $(OUT)/results --out $(OUT)/report --summary \
		--notebooks $(OUT)/notebooks --figures figures --started $(DEMO_START)

# The series at course settings (each notebook's course preset), for a GPU machine. One folder
# per dataset, each optional: what is not given is a synthetic stand-in, and the notebook says
# so. Make variables or environment; DATA is the old name of COVID_DIR. PRESET=NAME runs only
# that course's notebooks with it; SMOKE=1 runs the smoke settings.
COVID_DIR    ?= $(DATA)
KERMANY_DIR  ?=
SIIM_DIR     ?=
EXTERNAL_DIR ?=
FOLDERS := $(foreach v,COVID_DIR KERMANY_DIR SIIM_DIR EXTERNAL_DIR,$(if $($(v)),$(v)=$(abspath $($(v)))))

notebooks: $(STAMP)
	$(FOLDERS) $(if $(SMOKE),CXR_SMOKE_DIR=$(abspath $(OUT))/smoke) $(BIN)/python -m cxrlib notebooks --out $(OUT)/notebooks $(if $(PRESET),--preset $(PRESET)) \
		$(if $(SMOKE),--smoke)

notebooks-smoke: $(STAMP)
	CXR_SMOKE_DIR=$(CURDIR)/$(OUT)/smoke $(BIN)/python -m cxrlib notebooks --smoke --out $(OUT)/smoke/notebooks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_metrics.py
	$(BIN)/python benchmarks/bench_forward.py
	$(BIN)/python benchmarks/bench_loading.py --n 3600

clean:
	rm -rf $(OUT) .pytest_cache
