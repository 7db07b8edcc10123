# remsim — the two commands of README.md, and a few more.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
export UV_NATIVE_TLS := 1
UV_RUN := uv run --no-sync

.PHONY: bootstrap demo test lint format bench

bootstrap:
	@scripts/bootstrap.sh

## make demo: the whole system on one host (server, bankd with two software SIMs, a client)
demo: bootstrap
	$(UV_RUN) python scripts/demo.py

## make test: install what is needed, then run the whole suite
test: bootstrap
	@$(UV_RUN) pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc = 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

lint: bootstrap
	$(UV_RUN) ruff check .
	$(UV_RUN) ruff format --check .
	$(UV_RUN) mypy

format:
	$(UV_RUN) ruff check --fix .
	$(UV_RUN) ruff format .

## make bench: every benchmark, figures printed side by side
bench: bootstrap
	for b in bench/*.py; do echo "== $$b"; $(UV_RUN) python $$b || exit 1; done
