# One command runs the product with demo data, one runs every test. See README.md.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1:8000

.PHONY: run test test-default test-scaleout bench migrate clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

# The Python SDK (clients/python) is its own package; its tests run against the live product.
$(VENV)/.installed-test: pyproject.toml clients/python/pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test]" -e "clients/python[mcp]"
	touch $@

migrate: $(VENV)/.installed
	$(PY) manage.py migrate --noinput

# The web server, a Celery worker and beat, on SQLite and the filesystem broker: no server needed.
# Settings default to production (DEBUG off, HTTPS only); the local demo runs in development mode.
run bench: export DEBUG ?= True
run: migrate
	SITE_ROOT=http://$(HOST) $(PY) manage.py seed_demo
	@echo "Starting the web server on http://$(HOST)/admin/ with a Celery worker and beat (Ctrl-C stops all)"
	@trap 'kill 0' INT TERM EXIT; \
	DEMO_TRICKLE_SECONDS=$${DEMO_TRICKLE_SECONDS:-60} $(VENV)/bin/celery -A hitlgov worker --beat --loglevel=info --concurrency=2 & \
	$(PY) manage.py runserver $(HOST) --noreload

# Every test, twice: on the embedded default (SQLite, filesystem broker) and scaled out
# (PostgreSQL, Redis). .ci/system-deps installs and starts what the tests need. The two runs
# share nothing (their own var dirs, databases and brokers), so they run side by side: much of
# each is waiting on workers, browsers and databases. Each run's output prints when it ends.
test: $(VENV)/.installed-test
	bash .ci/system-deps
	$(MAKE) -j2 --output-sync=target test-default test-scaleout

test-default: $(VENV)/.installed-test
	HITL_VAR_DIR=var/test-default $(PY) -m pytest -p no:cacheprovider --durations=15

test-scaleout: $(VENV)/.installed-test
	. var/services.env && HITL_VAR_DIR=var/test-scaleout $(PY) -m pytest -p no:cacheprovider --durations=15 -m "not browser"

bench: $(VENV)/.installed
	$(PY) bench/policy.py

clean:
	rm -rf var
