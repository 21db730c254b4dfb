# Two commands do all the set-up on a new machine with Python >= 3.11:
#   make run    install what is needed and start the proxy on config/example-config.yaml
#   make test   install what is needed and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
CONFIG ?= config/example-config.yaml
BIN    := $(VENV)/bin

.PHONY: run test install bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@

run: install
	$(BIN)/llm-proxy serve --config $(CONFIG)

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) build *.egg-info
