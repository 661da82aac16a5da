# Quick start: `make demo` runs the main job, `make test` runs the test suite.
# Both create the virtual environment .venv on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: venv demo maxvol-demo test lint docs bench clean

# setup.py compiles maxvol_kit/_kernels*.pyx into the source tree (editable).
$(STAMP): pyproject.toml setup.py maxvol_kit/_kernels.pyx maxvol_kit/_kernels_avx2.pyx
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench,lint,docs]"
	touch $(STAMP)

venv: $(STAMP)

# The main job: `graft run` (full data, random subsets, InfoBatch and GRAFT, an
# MLP on long-tailed Fashion-MNIST beside the clean set, 3 seeds; digits if the
# Fashion-MNIST files are missing); report in out/demo.
demo: venv
	-$(DATA_SETUP)
	OPENBLAS_NUM_THREADS=2 $(BIN)/graft run --out out/demo --overwrite

# Fashion-MNIST from Debian's dataset-fashion-mnist where apt-get is available
# (as root); graft run falls back to digits without it.
DATA_SETUP = test -d /usr/share/datasets/fashion-mnist || \
	{ command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1; }

# MaxVol against scipy's pivoted QR and teneva, side by side (two small sizes).
maxvol-demo: venv
	OPENBLAS_NUM_THREADS=2 $(BIN)/python benchmarks/maxvol_bench.py --quick

# SCIPY_ARRAY_API=1 lets scikit-learn's checks run the estimators on torch and
# array_api_strict inputs too (array-API dispatch needs it set before import).
test: venv lint docs
	SCIPY_ARRAY_API=1 $(BIN)/python -m pytest

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The HTML documentation in docs/_build/html (Sphinx; warnings are errors).
docs: venv
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html

# Every benchmark of the docs, results into docs/benchmarks and the pages (about two
# hours on 2 cores; the training benchmark is most of it).
BENCH = OPENBLAS_NUM_THREADS=2 $(BIN)/python benchmarks
bench: venv
	$(BENCH)/maxvol_bench.py --out docs/benchmarks
	$(BENCH)/backend_bench.py --out docs/benchmarks
	$(BENCH)/coreset_bench.py --out docs/benchmarks
	$(BENCH)/loop_bench.py --repeats 9 --out docs/benchmarks
	$(BENCH)/train_bench.py --out docs/benchmarks
	$(BENCH)/train_bench.py --fractions 0.05 --modes refresh \
	  --variants random,sage,sage-top,sage-top-overall,graft-volume \
	  --table sage-results --page docs/sage.md --out docs/benchmarks
	$(BENCH)/prune_bench.py --out docs/benchmarks
	$(BENCH)/compress_bench.py --out docs/benchmarks
	$(BENCH)/distributed_bench.py --out docs/benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis docs/_build docs/generated
