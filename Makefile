# Every target installs what it needs first (scripts/bootstrap.sh is idempotent and quick).
UV := uv run --frozen
PYTEST := $(UV) pytest
SOURCES := janitor sandbox tests celeryconfig.py $(wildcard bench)

.PHONY: setup check lint format typecheck imports test unit conformance engines run demo bench soak

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

# The conformance part of the suite against one engine: docker-20.10, docker-26, podman-4.3
# or podman-5 (the two the machine's Debian release does not ship unpacked by `make engines`);
# empty: the machine's own dockerd.
ENGINE ?=
conformance: setup engines
	JANITOR_TEST_ENGINE=$(ENGINE) $(PYTEST) -q -m conformance tests

engines:
	@bash scripts/fetch-engines.sh >/dev/null

run: setup
	$(UV) janitor run

demo: setup
	$(UV) python -m sandbox.demo

# `make bench` runs every benchmark; `make bench CASE=NAME` one alone: `replay` (the day of
# spikes, about 80 minutes), `fleet`, or a case of `python -m bench` (`spike`, `backlog`, ...).
# BENCH_ARGS go to that one, e.g. `make bench CASE=replay BENCH_ARGS="--spikes 3 --duration 6m"`.
CASE ?=
BENCH_ARGS ?=
bench: setup
ifeq ($(CASE),)
	$(UV) python -m bench
	$(UV) python -m bench.fleet
	$(UV) python -m bench.replay
else ifeq ($(CASE),replay)
	$(UV) python -m bench.replay $(BENCH_ARGS)
else ifeq ($(CASE),fleet)
	$(UV) python -m bench.fleet $(BENCH_ARGS)
else
	$(UV) python -m bench --only $(CASE) $(BENCH_ARGS)
endif

soak: setup
	$(PYTEST) -q -m slow --override-ini="addopts=--strict-markers -ra" tests/soak
