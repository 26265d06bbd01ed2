# Two commands set everything up: `make run` and `make test`; `make test-fast` is the quick lane.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

# Local defaults for the test suite; override any of them from the environment.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/teamchat
TEST_REDIS_URL ?= redis://127.0.0.1:6379/14
# The fast lane's three pytest-xdist workers take this database and the next two.
TEST_FAST_REDIS_URL ?= redis://127.0.0.1:6379/6

.PHONY: install run test test-fast test-js chaos bench lint check clean

install: $(STAMP) node_modules/.installed

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py runstack

# The whole suite (browser, live servers, workers, chaos at a few faults each), with the
# test settings (a fast password hasher). Chromium is required: no browser test is skipped.
CHROMIUM := /usr/bin/chromium

test: install lint test-js
	@test -x $(CHROMIUM) || { echo "make test: $(CHROMIUM) is missing, so the browser tests cannot run." \
		"Install it with: apt-get install -y chromium  (or run make test-fast)" >&2; exit 1; }
	$(PY) manage.py collectstatic --noinput -v0
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} \
	REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
	SECRET_KEY=$${SECRET_KEY:-test-only-secret-key} \
	$(PY) -m pytest --ds=chatsite.settings_test $(PYTEST_ARGS)

# The chat page's protocol module (static/js/chat/protocol.js) under node's test runner.
test-js:
	node --test tests/js/

# The quick lane: every test that starts no server, worker, browser or other process
# (markers set from fixtures in tests/conftest.py). Still needs PostgreSQL and Redis.
# Two pytest-xdist workers, each with its own test database (test_<name>_gw0, _gw1) and
# Redis database (REDIS_URL's and the next one); PYTEST_ARGS="-n 0" runs it in one process.
# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set: otherwise each of the three
# processes compiles the project and rewrites every test module again (collecting takes
# 9 s of CPU instead of 4).
# Collected again only when a static source, a front-end package or a Python package changed.
var/static/.collected: $(STAMP) node_modules/.installed $(shell find static -type f)
	$(PY) manage.py collectstatic --noinput -v0
	touch $@

test-fast: install var/static/.collected
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} \
	REDIS_URL=$${REDIS_URL:-$(TEST_FAST_REDIS_URL)} \
	SECRET_KEY=$${SECRET_KEY:-test-only-secret-key} \
	ALLOW_NO_BROWSER=1 PYTHONDONTWRITEBYTECODE= \
	$(PY) -m pytest --ds=chatsite.settings_test -n 3 \
		-m "not browser and not integration and not chaos and not slow and not soak" $(PYTEST_ARGS)

# Real processes under faults (tests/chaos/): 50 worker SIGKILLs and 50 SIGTERMs mid-answer,
# a Redis restart, 200 socket drops, overlapping embedded turns, every provider failure.
# `make test` runs the same cases at a few faults each.
CHAOS_REDIS_URL ?= redis://127.0.0.1:6379/12

chaos: install
	$(PY) manage.py collectstatic --noinput -v0
	CHAOS=full LOG_LEVEL=$${LOG_LEVEL:-WARNING} \
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} \
	REDIS_URL=$${REDIS_URL:-$(CHAOS_REDIS_URL)} \
	SECRET_KEY=$${SECRET_KEY:-test-only-secret-key} \
	$(PY) -m pytest --ds=chatsite.settings_test tests/chaos -s -p no:cacheprovider --durations=0 $(PYTEST_ARGS)

bench: install
	$(PY) manage.py collectstatic --noinput -v0
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/teamchat_bench} \
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/13} \
	SECRET_KEY=$${SECRET_KEY:-bench-only-secret-key} \
	$(PY) -m bench $(BENCH_ARGS)

# Style, layers and types (ruff; import-linter, pyproject.toml; mypy with django-stubs),
# run before every test run.
lint: install
	$(VENV)/bin/ruff check .
	SECRET_KEY=$${SECRET_KEY:-lint-only-secret-key} $(VENV)/bin/lint-imports
	SECRET_KEY=$${SECRET_KEY:-lint-only-secret-key} \
	$(VENV)/bin/mypy chatsite llm accounts billing conversations answers realtime sharing emulator bench tests

clean:
	rm -rf $(VENV) node_modules var
