# Two commands do everything on a fresh clone: `make demo` and `make test`.
# Both create .venv and install bnlab into it first (torch pinned by constraints.txt).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install demo data test lint bench clean browser docs

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The lab's headline experiment: tutorial 001's CNN with vs without BN on Fashion-MNIST (~2 min).
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

test: lint docs browser
	$(VENV)/bin/pytest

# The documentation site (mkdocs.yml, docs/) into build/site, strict: a warning (broken link,
# missing anchor or API reference, docstring the parser cannot read) fails the build.
# NO_MKDOCS_2_WARNING silences mkdocs-material's banner about MkDocs 2.0 (not a build warning).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

# Kernel benchmark: bnlab vs torch native (and a torch.compile peer); table + bench.json.
# Then the real-model benchmark (bnlab bench --models): whole networks, table + bench_models.json.
# The other measurement tools: python -m bnlab.bench.<tool> (see src/bnlab/bench/__init__.py).
bench: $(STAMP)
	$(PY) -m bnlab.bench.kernels $(BENCH_ARGS)
	$(PY) -m bnlab.bench.models $(MODEL_BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info
	find src -name '*.nbi' -delete -o -name '*.nbc' -delete
