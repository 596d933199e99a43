# `make demo` and `make test` each set up everything on a fresh machine, then run.
# The CPU build of torch is pinned here (see DEVELOPERS.md): an unpinned torch pulls a
# multi-GB CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TORCH := torch==2.13.0

.PHONY: setup test test-fast test-slow demo clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

# The edit loop's tier (under 2 minutes on 2 cores): parity of every member, strict loading, the loop, the CLI's
# refusals; tests marked heavy (trainings, torchrun, live servers, benchmark scripts) run in `make test` only.
test-fast: setup
	$(BIN)/python -m pytest -q -m 'not slow and not heavy'

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

demo: setup
	$(BIN)/python examples/demo.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
