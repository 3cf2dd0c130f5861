# Two commands on a fresh machine (Python 3.11):  make demo  |  make test
# Each creates .venv on first use. torch is pinned here (dev/CI: a CPU build); users of the
# package pick their own torch build.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench clean browser docs

$(STAMP): pyproject.toml constraints-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found); set PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints-dev.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints-dev.txt -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/hubckpt demo

test: $(STAMP) browser
	$(PY) -m pytest -q

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
	$(PY) -m pip install -q -c constraints-dev.txt -e ".[docs]"
	DISABLE_MKDOCS_2_WARNING=true NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d site

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
