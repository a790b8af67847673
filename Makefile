# Two set-up commands (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The whole pipeline on the embedded default data (demo profile): data, curation,
# M1/M2/M3/full training, evaluation, ablation report, registration, promotion.
demo: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc metrics show

lint: $(STAMP)
	$(BIN)/ruff check .

# The whole suite, slow end-to-end tests (kfp.local DAG, all metrics) included: ~8 min.
test: lint
	$(BIN)/python -m pytest -q

# Everything but the tests marked slow: ~3 min, for quick iterations.
test-fast: lint
	$(BIN)/python -m pytest -m "not slow" -q

benchmark: $(STAMP)
	$(BIN)/python benchmarks/inference.py --output benchmarks/results/inference.json

clean:
	rm -rf data models metrics/*.json reports/* mlruns.db mlartifacts build .pytest_cache
