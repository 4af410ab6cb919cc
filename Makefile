# The README's two commands: `make run` and `make test`. Everything else supports them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run run-fakes test lint typecheck unit bench agents-check install clean

$(STAMP): requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## Serve Gentity with the embedded defaults (SQLite, local compute) on http://127.0.0.1:8080
run: install
	$(BIN)/gentity serve

## Serve on the fake Fly and fake Cloudflare (compute on fly, DNS on cloudflare); needs root
run-fakes: install
	$(BIN)/python -m gentity.testing.stack

## Lint, type-check and run the whole test suite (SQLite and PostgreSQL)
test: install lint typecheck unit

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest $(PYTEST_ARGS)
	# The API, SDK and CLI suites again, every server on the fake Fly and the fake Cloudflare.
	GENTITY_TEST_STACK=fakes $(BIN)/pytest tests/server tests/client tests/cli $(PYTEST_ARGS)

## Benchmarks (not part of `make test`)
bench: install
	$(BIN)/python -m bench

## Every catalog agent for real (registries, installs, a fake key): install time, time to ready,
## last screen. Needs network, takes minutes; not part of `make test`. AGENTS="aider codex" for some.
agents-check: install
	$(BIN)/python -m bench.agents_check $(AGENTS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache test-output
