# remsim — the two commands of README.md, and a few more.
SHELL := /bin/bash
export PATH := $(HOME)/.local/bin:$(PATH)
export UV_NATIVE_TLS := 1
UV_RUN := uv run --no-sync

.PHONY: bootstrap demo test lint format bench dist install images compose-smoke

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

## make images [IMAGE_TAG=latest] [BASE_IMAGE=...] [PIP_INDEX_URL=...]: every image,
## remsim/<target>:IMAGE_TAG, from deploy/docker/Dockerfile (the build args: mirrored or
## offline builds); needs a Docker engine
IMAGE_TARGETS := server api bankd client
IMAGE_TAG ?= latest
images:
	@docker info >/dev/null 2>&1 || { echo "make images: no Docker engine answers (docker info failed): nothing built" >&2; exit 2; }
	for target in $(IMAGE_TARGETS); do \
	    docker build -f deploy/docker/Dockerfile --target $$target -t remsim/$$target:$(IMAGE_TAG) \
	        $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
	        $(if $(PIP_INDEX_URL),--build-arg PIP_INDEX_URL=$(PIP_INDEX_URL)) . || exit 1; \
	done

## make compose-smoke: deploy/compose.yaml up, a map through REST, an APDU through the client
## container, a core killed, the map still there, all torn down (scripts/compose_smoke.py)
compose-smoke: bootstrap
	@$(UV_RUN) python scripts/compose_smoke.py

## make dist: the release artefacts, a wheel and an sdist of every shipped member, in dist/
## (remsim-testing, the test support, is built and left out: it is never shipped)
dist:
	@command -v uv >/dev/null || { echo "make dist: uv is missing (make bootstrap installs it)" >&2; exit 1; }
	rm -rf dist && uv build --all-packages --quiet --out-dir dist
	rm -f dist/remsim_testing-*

## make install [PREFIX=/usr/local] [DESTDIR=]: the programs in a venv under PREFIX/lib/remsim,
## the systemd units, default files and docs (scripts/install.sh; docs/operations.md)
PREFIX ?= /usr/local
install: dist
	PREFIX="$(PREFIX)" DESTDIR="$(DESTDIR)" scripts/install.sh
