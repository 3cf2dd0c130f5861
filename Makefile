# Two commands on a fresh machine (Python 3.11):  make demo  |  make test
# Each creates .venv on first use. torch is pinned here (dev/CI: a CPU build); users of the
# package pick their own torch build.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean browser docs lint

$(STAMP): pyproject.toml constraints-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found); set PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints-dev.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints-dev.txt -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hubckpt demo

test: $(STAMP) browser lint docs wheel-check
	$(PY) -m pytest -q

# The quality gate: ruff (lint + format) and mypy (strict on the formats, errors and public API).
lint: $(STAMP)
	$(VENV)/bin/ruff check hubckpt tests bench docs/gen_pages.py
	$(VENV)/bin/ruff format --check hubckpt tests bench docs/gen_pages.py
	$(VENV)/bin/mypy hubckpt

# What users install is what is tested: the sdist and wheel built, the wheel installed (not editable) in a
# fresh venv outside the checkout, then `hubckpt demo` and a smoke set of tests run against it (.ci/wheel-check).
.PHONY: wheel-check
wheel-check: $(STAMP)
	PYTHON=$(PYTHON) BUILD_PYTHON=$(PY) .ci/wheel-check

# The web pages' browser tests use Debian's chromium + chromium-driver: installed when missing and apt-get
# is there (CI runs as root); otherwise those tests skip themselves.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
	      || echo "Could not install chromium; the browser tests will be skipped."; \
	  else echo "chromium/chromium-driver missing and apt-get unavailable: the browser tests will be skipped."; fi; \
	fi

bench: $(STAMP)
	$(PY) bench/transfer.py
	$(PY) bench/convert.py
	$(PY) bench/publish.py
	$(PY) bench/journal.py
	$(PY) bench/load.py
	$(PY) bench/checkpointer.py
	$(PY) bench/analysis.py
	$(PY) bench/web.py
	$(PY) bench/soak.py

# The docs site (mkdocs-material + mkdocstrings; the `docs` extra), strict: a broken link or reference fails.
docs: $(STAMP)
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
