# Two commands do all set-up on a fresh machine:
#   make run   — the service on the embedded default (SQLite + django-q2 ORM broker),
#                with a worker, a reconciler and the provider simulators
#   make test  — every test (DATABASE_URL / REDIS_URL select PostgreSQL + Redis)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)

.PHONY: install run test lint format bench clean fuzz

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

# The demo's own random SECRET_KEY and FERNET_KEYS, made once per checkout: with
# DEBUG off the service refuses public defaults (ccdash/checks.py).
DEMO_SECRETS := var/demo-secrets.env

$(DEMO_SECRETS):
	mkdir -p var
	umask 077 && $(BIN)/python -c 'import secrets; t = secrets.token_urlsafe; print(f"SECRET_KEY={t(50)}\nFERNET_KEYS={t(32)}")' > $@

run: install $(DEMO_SECRETS)
	set -a && . ./$(DEMO_SECRETS) && set +a && $(BIN)/python manage.py serve_demo

test: install
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# schemathesis over every API operation against a served app (own virtualenv, bounded time)
fuzz: install
	.ci/fuzz

bench: install
	$(BIN)/python -m benchmarks.reconcile_sweep
	$(BIN)/python -m benchmarks.api_list
	$(BIN)/python -m benchmarks.web_serving
	$(BIN)/python -m benchmarks.api_budget

clean:
	rm -rf $(VENV) .venv-fuzz var .pytest_cache .ruff_cache
