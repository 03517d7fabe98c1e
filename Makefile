# Two entry points for a fresh clone (see README): `make demo` and `make test`.
# Both create .venv once and reinstall only when pyproject.toml changes.
PY ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

.PHONY: install demo test
install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vladva demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q
