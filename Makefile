# Two commands: `make repro` runs the pipeline, `make test` runs the tests.
# Both create .venv and install the pinned stack first (requirements.lock).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Stage commands in dvc.yaml call `python`: make it the virtual environment's.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install params repro test test-fast test-matrix lint bench bench-scale lock clean push pull

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $(STAMP)

# params.yaml is composed from conf/ by Hydra, as `dvc exp run` composes it (DVC's own function,
# so the two cannot differ): edit conf/config.yaml or conf/model/, then `make params`.
params: $(STAMP)
	$(BIN)/python -c 'import os; from dvc.utils.hydra import compose_and_dump; \
	compose_and_dump("params.yaml", os.path.abspath("conf"), None, "config", os.getcwd(), [])'

repro: $(STAMP)
	$(BIN)/dvc repro

# Share data, models, reports and the run-cache through the DVC remote (.dvc/config: a folder
# beside this clone); the run-cache lets a teammate's `dvc repro` skip every stage that already
# ran anywhere. DVC_REMOTE=s3://bucket/path (any dvc remote URL, or a configured remote's name)
# points one command elsewhere, e.g. in a scheduled CI job, and writes no DVC config file
# (docs/scaling-out-remotes.md). `make pull` from an empty remote pulls nothing and succeeds.
push: $(STAMP)
	$(BIN)/digitpipe push

pull: $(STAMP)
	$(BIN)/digitpipe pull

# One pytest worker per core: the slow tests wait on subprocesses (dvc, mlflow) as much as on torch.
PYTEST := $(BIN)/python -m pytest -n auto --dist worksteal

test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not slow"

# Every zoo model x 5 image sizes x 3 class counts through every stage (make test runs 26 of them).
test-matrix: $(STAMP)
	$(PYTEST) --full-matrix tests/test_datasets.py -k every_stage

lint: $(STAMP)
	$(BIN)/ruff check .

# Every benchmark; evaluate, predict and train need data/processed (make repro first). Each
# writes its figures to bench/results/<name>.json; bench/render.py makes docs/benchmarks.md.
bench: $(STAMP)
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/evaluate.py
	$(BIN)/python bench/predict.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/hostile.py
	$(BIN)/python bench/track.py
	$(BIN)/python bench/render.py

# Memory at scale: 1M synthetic images, many minutes and ~1.5 GB, so not part of make bench.
bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py --sizes 100000 1000000 --stream-sizes 10000000 --archs mlp bncnn
	$(BIN)/python bench/render.py

lock: $(STAMP)
	{ echo "# Exact versions of the whole stack: make installs with -c requirements.lock."; \
	  echo "# Regenerate with make lock (torch is the CPU build: its +cpu suffix is dropped)."; \
	  $(BIN)/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) data/processed
