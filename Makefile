# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Both create .venv and install bnlab into it first (torch pinned by constraints.txt).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo data test lint bench clean browser

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The lab's headline experiment: seed 001's CNN with vs without BN on Fashion-MNIST (~2 min).
demo: $(STAMP) data
	$(VENV)/bin/bnlab compare lizard-cnn $(DEMO_ARGS)

# Fashion-MNIST from Debian's dataset-fashion-mnist, installed with apt-get only where missing
# and root; never fails the build (bnlab then says how to get the data).
data:
	@if [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
	      || echo "could not install dataset-fashion-mnist; use --data-dir or --download" >&2; \
	  else \
	    echo "Fashion-MNIST missing: sudo apt-get install dataset-fashion-mnist (or --data-dir)" >&2; \
	  fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy src/bnlab

# Headless Chromium for the report's browser test (tests/lab/test_report_browser.py):
# Debian's chromium + chromium-driver, installed with apt-get only where missing and root.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else \
	    echo "chromium/chromedriver missing: sudo apt-get install chromium chromium-driver" >&2; \
	  fi; \
	fi

test: lint browser
	$(VENV)/bin/pytest

# Kernel benchmark: bnlab vs torch native (and a torch.compile peer); table + bench.json.
bench: $(STAMP)
	$(PY) -m bnlab.bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info
