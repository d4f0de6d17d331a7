# hubml: the two commands are `make run` and `make test`; everything else is set-up they call.
SHELL := /bin/bash
# As root, users' servers, kernels, job runs and apps run as their own Unix accounts and execute
# the platform's Python: build it from the system interpreter they can reach, not one under
# /root (pyenv), when there is one.
PYTHON ?= $(shell if [ "$$(id -u)" = 0 ] && [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then echo /usr/bin/python3; else echo python3; fi)
VENV := .venv
BIN := $(VENV)/bin
# re-install when the dependency declarations change
STAMP := $(VENV)/.installed-$(shell (cat pyproject.toml package.json; echo $(PYTHON)) | sha1sum | cut -c1-10)
CHROMIUM ?= /usr/bin/chromium
PYTEST_ARGS ?=
# the JupyterLab extension (labextension/): built into the Python package (widgets/labextension)
# with the project's npm, and linked where this environment's JupyterLab looks for prebuilt ones
LABEXT_OUT := widgets/labextension
LABEXT_LINK := $(VENV)/share/jupyter/labextensions/hubml-lab
# JupyterLab settings hubml sets for everyone: no news or update checks against jupyter.org
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json

.PHONY: run test install system-deps lint bench clean

run: install
	$(BIN)/hubml up

test: install system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(STAMP) node_modules/.bin/configurable-http-proxy $(LABEXT_LINK) $(LAB_OVERRIDES)

$(STAMP):
	@# a venv made from another interpreter is made again
	if [ -x $(BIN)/python ] && ! grep -qx "executable = $$(readlink -f $$(command -v $(PYTHON)))" $(VENV)/pyvenv.cfg; then rm -rf $(VENV); fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[platform,test]'
	$(BIN)/python -m hubml.hub_config.plugins
	rm -f $(VENV)/.installed-* && touch $@

node_modules/.bin/configurable-http-proxy: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

labextension/node_modules/.installed: labextension/package.json labextension/package-lock.json
	cd labextension && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(LABEXT_OUT)/package.json: $(STAMP) labextension/node_modules/.installed labextension/src/*.js labextension/style/*.css
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/jupyter-builder build labextension
	touch $@

$(LAB_OVERRIDES): labextension/settings/overrides.json $(STAMP)
	mkdir -p $(dir $@) && cp $< $@

$(LABEXT_LINK): $(LABEXT_OUT)/package.json
	@# (a re-install may have put a copy there: the link replaces it)
	mkdir -p $(dir $@) && rm -rf $@ && ln -s $(abspath $(LABEXT_OUT)) $@

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
	rm -rf $(VENV) node_modules labextension/node_modules $(LABEXT_OUT) .pytest_cache test-artifacts
