# hubml: the two commands are `make run` and `make test`; everything else is set-up they call.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# re-install when the dependency declarations change
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml package.json | sha1sum | cut -c1-10)
CHROMIUM ?= /usr/bin/chromium
PYTEST_ARGS ?=

.PHONY: run test install system-deps lint bench clean

run: install
	$(BIN)/hubml up

test: install system-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(STAMP) node_modules/.bin/configurable-http-proxy

$(STAMP):
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[platform,test]'
	rm -f $(VENV)/.installed-* && touch $@

node_modules/.bin/configurable-http-proxy: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# Debian packages the test tiers use: Chromium for the browser tier (Playwright drives it; its
# own browser download cannot work offline) and the PostgreSQL server for the postgres tier.
# Fails loudly when they cannot be installed.
SYSTEM_DEPS_OK := $(shell [ -x $(CHROMIUM) ] && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && echo yes)
system-deps:
ifneq ($(SYSTEM_DEPS_OK),yes)
	@if [ "$$(id -u)" = 0 ]; then SUDO=; elif command -v sudo >/dev/null; then SUDO=sudo; \
	  else echo "ERROR: the browser and postgres tiers need 'apt-get install chromium postgresql' as root" >&2; exit 1; fi; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql >/dev/null
endif

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) node_modules .pytest_cache test-artifacts
