# Every target installs what it needs first (scripts/bootstrap.sh is idempotent and quick).
UV := uv run --frozen
PYTEST := $(UV) pytest
SOURCES := janitor sandbox tests celeryconfig.py $(wildcard bench)

.PHONY: setup check lint format typecheck imports test unit run demo bench soak

setup:
	@bash scripts/bootstrap.sh

check: setup lint typecheck imports
	$(PYTEST) -q

lint:
	$(UV) ruff check $(SOURCES)
	$(UV) ruff format --check $(SOURCES)

format:
	$(UV) ruff check --fix $(SOURCES)
	$(UV) ruff format $(SOURCES)

typecheck:
	$(UV) mypy

imports:
	$(UV) lint-imports

# The whole suite: unit tests, then integration tests against private dockerd, Redis and Celery.
test: setup
	$(PYTEST) -q

unit: setup
	$(PYTEST) -q tests/unit

run: setup
	$(UV) janitor run

demo: setup
	$(UV) python -m sandbox.demo

bench: setup
	$(UV) python -m bench
	$(UV) python -m bench.fleet

soak: setup
	$(PYTEST) -q -m slow --override-ini="addopts=--strict-markers -ra" tests/soak
