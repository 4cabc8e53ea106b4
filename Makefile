# Two commands: `make train` and `make test`. Each creates .venv on first use and reuses it afterwards.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# A stamp per extras set, tied to pyproject.toml, so a second call skips the install.
HASH := $(shell sha1sum pyproject.toml | cut -c1-10)
TRAIN_STAMP := $(VENV)/.stamp-train-$(HASH)
TEST_STAMP := $(VENV)/.stamp-test-$(HASH)
PIP := $(PY) -m pip install --disable-pip-version-check -q

.PHONY: train test test-all lint bench clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)

$(TRAIN_STAMP): pyproject.toml | $(PY)
	$(PIP) -e .
	@touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PIP) -e ".[dev,sweep,slurm,face,eval,export,app]"
	@touch $@ $(TRAIN_STAMP)

train: $(TRAIN_STAMP)
	$(PY) train.py $(ARGS)

# Two pytest-xdist workers, a test file each at a time: most of the suite's wall time is single-threaded (imports,
# subprocess start-up, video coding), so two workers on one thread each finish sooner than one on two threads.
TEST_WORKERS ?= 2

test: $(TEST_STAMP)
	$(PY) -m pytest -m "not slow" -n $(TEST_WORKERS) --dist loadfile $(ARGS)

test-all: $(TEST_STAMP)
	$(PY) -m pytest $(ARGS)

lint: $(TEST_STAMP)
	$(PY) -m ruff check reenact tests benchmarks train.py

clean-venv:
	rm -rf $(VENV)
