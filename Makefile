# Two set-up commands (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo promote lock-check test test-fast lint benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The whole pipeline on the embedded default data (demo profile): data, curation,
# M1/M2/M3/full training, evaluation, ablation report (`dvc repro`), then registration
# and promotion, which are no DVC stage so that `dvc exp run` never moves the champion.
demo: $(STAMP)
	mkdir -p data/footage  # your real footage (semivdn footage ingest); empty is fine
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro
	$(MAKE) promote
	$(BIN)/semivdn metrics

# Register the `full` model that `dvc repro` produced and let the gate decide on `champion`.
promote: $(STAMP)
	$(BIN)/semivdn register --model models/full/model.safetensors --variant full --eval reports/eval/full
	$(BIN)/semivdn promote > metrics/promotion.json

# dvc.lock must record the code and params the committed files hold (no training: hashes only).
lock-check: $(STAMP)
	$(BIN)/python -m semivdn.lockcheck

lint: $(STAMP)
	$(BIN)/ruff check .

# The whole suite, slow end-to-end tests (kfp.local DAG, all metrics) included: ~8 min.
test: lint lock-check
	$(BIN)/python -m pytest -q

# Everything but the tests marked slow: ~3 min, for quick iterations.
test-fast: lint
	$(BIN)/python -m pytest -m "not slow" -q

benchmark: $(STAMP)
	$(BIN)/python benchmarks/inference.py --output benchmarks/results/inference.json

clean:
	rm -rf data models metrics/*.json reports/* mlruns.db mlartifacts build .pytest_cache
