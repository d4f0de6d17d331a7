# hubml: the two commands are `make run` and `make test`; everything else is set-up they call.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# re-install when the dependency declarations change
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml package.json | sha1sum | cut -c1-10)
CHROMIUM ?= /usr/bin/chromium
PYTEST_ARGS ?=

.PHONY: run test install chromium lint bench clean

run: install
	$(BIN)/hubml up

test: install chromium
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

# Debian's Chromium for the browser tier (Playwright drives it; its own browser download
# cannot work offline). Fails loudly when it cannot be installed.
chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "ERROR: the browser tier needs Chromium at $(CHROMIUM): run 'apt-get install chromium' as root" >&2; exit 1; fi; \
	fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) node_modules .pytest_cache test-artifacts
