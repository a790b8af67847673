# Two set-up commands (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo promote release lock-check test test-fast lint benchmark clean image-lock wheelhouse local-base image image-test

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
	$(BIN)/semivdn figure --eval reports/eval/release --domains real paired --out docs/demo.png
	$(BIN)/semivdn metrics

# Register the `full` model that `dvc repro` produced and let the gate decide on `champion`.
promote: $(STAMP)
	$(BIN)/semivdn register --model semivdn/assets/semivdn-release.safetensors --variant M2+ft \
	  --eval reports/eval/release --first-champion  # the shipped release model seeds an empty registry
	$(BIN)/semivdn register --model models/full/model.safetensors --variant full --eval reports/eval/full
	$(BIN)/semivdn promote > metrics/promotion.json

# Retrain and ship the release model (semivdn/assets, MODEL_CARD.md): opt-in, about 6 h on 2 CPU cores.
# The demo's commands with the `release` profile, on folders of their own. Not a DVC pipeline: a dvc.yaml is
# picked up by every `dvc repro` and `dvc exp run`, and the release must never run by accident.
# The release model is an output ensemble (`semivdn ensemble`: the mean of the members' outputs) of two
# networks trained separately by the same eight-stage recipe, the second with the snow-stream loss
# (loss.snow_stream=1.0) throughout: M2 from scratch, then supervised fine-tunings (M2+ft), each a warm restart
# of the learning rate with the settings the stage used (--set); stages 4 and 6 run at batches of 32 (CUDA is
# used when present; on 2 CPU cores they take ~10 and ~60 min); stage 8 trains on a second data set whose paired
# train snow is filmed (FILMED: fainter, out of focus, 30 % through a noisy, compressing camera; val and test
# are the same clips). The first network gets a ninth, gentler stage. Every stage's --metrics file carries its
# recipe into the card.
REL := --profile release
RELDATA := --raw data/release/raw --curated data/release/curated
FILMED := --set 'paired_randomization.opacity_scale=[0.3,1.0]' --set 'paired_randomization.defocus=[0.0,2.5]' \
  --set paired_randomization.camera_fraction=0.3
FILMEDDATA := --raw data/release/filmed/raw --curated data/release/filmed/curated
SNOWSTREAM := snowstream/
RELSTAGES := $(foreach n,1 2 3 4 5 6 7 8 9,metrics/release/train_stage$(n).json)
SNOWSTREAMSTAGES := $(foreach n,1 2 3 4 5 6 7 8,metrics/release/$(SNOWSTREAM)train_stage$(n).json)
RELEASE_MODEL := models/release/ensemble/model.safetensors
# one stage of a network: `$(call REL_STAGE,NETWORK,N,DATA,EXTRA) --variant V ...` (NETWORK: empty for the
# first, $(SNOWSTREAM) for the second, whose EXTRA is the snow-stream loss); its metrics JSON records the recipe
REL_STAGE = $(BIN)/semivdn train $(REL) $(3) $(4) --out models/release/$(1)stage$(2) \
  --metrics metrics/release/$(1)train_stage$(2).json --curve metrics/release/$(1)curve_stage$(2).csv
# stages 1-8 of one network: `$(call REL_NETWORK,NETWORK,EXTRA)`
REL_NETWORK = \
	$(call REL_STAGE,$(1),1,$(RELDATA),$(2)) --variant M2 --init none --set data.identity_fraction=0.25; \
	$(call REL_STAGE,$(1),2,$(RELDATA),$(2)) --variant M2+ft --init models/release/$(1)stage1/model.safetensors \
	  --set data.identity_fraction=0.4; \
	$(call REL_STAGE,$(1),3,$(RELDATA),$(2)) --variant M2+ft --init models/release/$(1)stage2/model.safetensors; \
	$(call REL_STAGE,$(1),4,$(RELDATA),$(2)) --variant M2+ft --init models/release/$(1)stage3/model.safetensors \
	  --set train.batch_size=32 --set variants.M2+ft.lr=4.0e-4 --set variants.M2+ft.iters=1500; \
	$(call REL_STAGE,$(1),5,$(RELDATA),$(2)) --variant M2+ft --init models/release/$(1)stage4/model.safetensors \
	  --set variants.M2+ft.lr=1.0e-4 --set variants.M2+ft.iters=6000 --set data.identity_fraction=0.8; \
	$(call REL_STAGE,$(1),6,$(RELDATA),$(2)) --variant M2+ft --init models/release/$(1)stage5/model.safetensors \
	  --set train.batch_size=32 --set data.crop=128 --set variants.M2+ft.lr=2.0e-4 --set variants.M2+ft.iters=4700 \
	  --set data.identity_fraction=0.8; \
	$(call REL_STAGE,$(1),7,$(RELDATA),$(2)) --variant M2+ft --init models/release/$(1)stage6/model.safetensors \
	  --set variants.M2+ft.lr=1.0e-4 --set variants.M2+ft.iters=6000 --set data.identity_fraction=0.95; \
	$(call REL_STAGE,$(1),8,$(FILMEDDATA),$(2)) --variant M2+ft --init models/release/$(1)stage7/model.safetensors \
	  --set variants.M2+ft.lr=1.0e-4 --set variants.M2+ft.iters=2500 --set data.identity_fraction=0.9
release: $(STAMP)
	set -e; \
	$(BIN)/semivdn data make $(REL) --out data/release/raw --truth data/release/real_truth; \
	$(BIN)/semivdn data curate $(REL) --raw data/release/raw --footage none --out data/release/curated; \
	$(BIN)/semivdn data make $(REL) $(FILMED) --out data/release/filmed/raw --truth data/release/filmed/real_truth; \
	$(BIN)/semivdn data curate $(REL) $(FILMED) --raw data/release/filmed/raw --footage none \
	  --out data/release/filmed/curated; \
	$(call REL_NETWORK,,); \
	$(call REL_STAGE,,9,$(FILMEDDATA),) --variant M2+ft --init models/release/stage8/model.safetensors \
	  --set variants.M2+ft.lr=1.0e-4 --set variants.M2+ft.iters=2500 --set data.identity_fraction=0.93; \
	$(call REL_NETWORK,$(SNOWSTREAM),--set loss.snow_stream=1.0); \
	$(BIN)/semivdn ensemble --members models/release/stage9/model.safetensors \
	  models/release/$(SNOWSTREAM)stage8/model.safetensors --out $(RELEASE_MODEL); \
	for row in input median3 release; do \
	  model=$$row; [ $$row = release ] && model=$(RELEASE_MODEL); \
	  $(BIN)/semivdn evaluate $(REL) --model $$model --name $$row --split test $(RELDATA) \
	    --truth data/release/real_truth --out reports/release/eval/$$row; \
	done; \
	$(BIN)/semivdn release $(REL) --model $(RELEASE_MODEL) \
	  --train-metrics $(RELSTAGES) --train-metrics $(SNOWSTREAMSTAGES) --evals reports/release/eval/release \
	  reports/release/eval/input reports/release/eval/median3 --card MODEL_CARD.md; \
	$(BIN)/semivdn figure --eval reports/release/eval/release --domains real paired --out docs/release.png

# dvc.lock must record the code and params the committed files hold (no training: hashes only).
lock-check: $(STAMP)
	$(BIN)/python .ci/lockcheck.py

lint: $(STAMP)
	$(BIN)/ruff check .

# The whole suite, slow end-to-end tests (kfp.local DAG, all metrics) included: ~11 min on 2 cores.
# Two pytest workers, one test file each at a time (module fixtures such as the DVC repro are built once),
# one thread each: the end-to-end tests spend much of their time starting processes, which then overlap.
PYTEST := OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile
test: lint lock-check
	$(PYTEST)

# Everything but the tests marked slow: ~3 min, for quick iterations.
test-fast: lint
	$(PYTEST) -m "not slow"

benchmark: $(STAMP)
	$(BIN)/python benchmarks/inference.py --output benchmarks/results/inference.json

# --- the container image (infra/docker) ----------------------------------------------------------------------
# VARIANT=cuda (default: runs on CPU and GPU nodes, and builds from PyPI alone) or cpu (smaller; needs
# PyTorch's CPU index). The base is BASE_IMAGE when a registry has it, else a minimal Debian made here with
# debootstrap from DEBIAN_MIRROR (LOCAL_BASE): no image registry is needed. The locked wheels are fetched
# once into build/wheelhouse-VARIANT with this machine's pip settings and served to the build over localhost.
VARIANT ?= cuda
IMAGE ?= semivdn:$(VARIANT)
BASE_IMAGE ?= debian:bookworm-slim
LOCAL_BASE ?= semivdn-base:bookworm
DEBIAN_MIRROR ?= http://deb.debian.org/debian
WHEEL_PORT ?= 8765
LOCK := infra/docker/requirements-$(VARIANT).lock
WHEELHOUSE := build/wheelhouse-$(VARIANT)

# Re-resolve the lock files from pyproject.toml and infra/docker/<variant>.in.
image-lock: $(STAMP)
	$(BIN)/python infra/docker/lock.py cuda
	$(BIN)/python infra/docker/lock.py cpu

$(WHEELHOUSE)/.complete: $(LOCK) $(STAMP)
	$(BIN)/pip download --quiet --no-deps --require-hashes -r $(LOCK) -d $(WHEELHOUSE)
	touch $@

wheelhouse: $(WHEELHOUSE)/.complete

local-base:
	rootfs=$$(mktemp -d) && debootstrap --variant=minbase bookworm $$rootfs $(DEBIAN_MIRROR) \
	  && tar -C $$rootfs -c . | docker import - $(LOCAL_BASE); status=$$?; rm -rf $$rootfs; exit $$status

image: wheelhouse
	base=$(BASE_IMAGE); \
	if ! docker image inspect $$base >/dev/null 2>&1 && ! docker pull $$base >/dev/null 2>&1; then \
	  echo "$$base cannot be pulled: building on $(LOCAL_BASE)"; base=$(LOCAL_BASE); \
	  docker image inspect $$base >/dev/null 2>&1 || $(MAKE) local-base || exit 1; \
	fi; \
	$(BIN)/python -m http.server $(WHEEL_PORT) --bind 127.0.0.1 --directory $(WHEELHOUSE) >/dev/null 2>&1 & server=$$!; \
	docker build --network host -f infra/docker/Dockerfile -t $(IMAGE) --build-arg BASE_IMAGE=$$base \
	  --build-arg VARIANT=$(VARIANT) --build-arg PIP_INDEX_URL=http://127.0.0.1:$(WHEEL_PORT)/ \
	  --build-arg PIP_FIND_LINKS=http://127.0.0.1:$(WHEEL_PORT)/ \
	  --build-arg GIT_SHA=$$(git describe --always --dirty --abbrev=40 --match=NONE) \
	  --build-arg CREATED=$$(date -u +%Y-%m-%dT%H:%M:%SZ) .; status=$$?; kill $$server; exit $$status
	@docker image inspect --format '{{.Size}} {{.Id}}' $(IMAGE) | \
	  awk '{printf "image $(IMAGE): %.0f MB, digest %s\n", $$1 / 1e6, $$2}'

# The DAG in containers (kfp.local DockerRunner, smoke profile) to a promoted champion: slow, opt-in.
image-test: image $(STAMP)
	SEMIVDN_TEST_IMAGE=$(IMAGE) $(BIN)/python -m pytest -q -m image tests/test_image.py

clean:
	rm -rf data models metrics/*.json reports/* mlruns.db mlartifacts build .pytest_cache
