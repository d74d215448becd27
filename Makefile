# Two commands: `make run` and `make test`. Everything else here serves them.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Django 6 needs Python 3.12 or newer; take the first one found.
PYTHON_312 := $(shell for p in python3.12 python3 python3.13; do \
	if $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then command -v $$p; break; fi; done)

.PHONY: run test lint typecheck unit faults browser chromium clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@if [ -z "$(PYTHON_312)" ]; then echo "No Python 3.12 or newer found (Django 6 needs it). Install python3.12 and try again." >&2; exit 1; fi
	@test -x $(PY) || $(PYTHON_312) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

run: $(VENV)/.installed
	$(PY) manage.py migrate --noinput
	$(PY) manage.py demo_fleet
	TIME_SCALE=$${TIME_SCALE:-30} $(PY) -m config.run

test: $(VENV)/.installed chromium lint typecheck unit browser

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(VENV)/.installed
	$(PY) -m mypy

# The suite runs against its own embedded Redis unless REDIS_URL is set.
unit: $(VENV)/.installed
	$(PY) -m config.embedded_redis -- $(PY) -m pytest --ignore=tests/browser $(PYTEST_ARGS)

# Fault injection, in full: many worker kills, Redis and database outages, beats stopped or
# doubled (tests/faults; `make unit` runs a reduced form). FAULTS_SEED=N changes the seeds.
faults: $(VENV)/.installed
	FAULTS_FULL=1 $(PY) -m config.embedded_redis -- $(PY) -m pytest tests/faults $(PYTEST_ARGS)

# Browser tests run in their own pytest process (Playwright keeps an event loop running).
browser: $(VENV)/.installed chromium
	$(PY) -m config.embedded_redis -- $(PY) -m pytest tests/browser $(PYTEST_ARGS)

# Debian's Chromium, driven by Playwright through executable_path (never a downloaded browser).
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
		else echo "Browser tests need Debian's chromium: sudo apt-get install chromium" >&2; exit 1; fi; fi

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
