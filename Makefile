# Two commands do everything: `make demo` (the main job) and `make test` (the test suite).
# Both create .venv and install the pinned packages on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { \
	  echo "resnetkit needs Python >= 3.10; $(PYTHON) is older: make PYTHON=python3.11 ..."; exit 1; }
	@# A .venv left half-made (no pip: python3-venv was missing) is made again.
	$(PY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

# TensorFlow Lite and Core ML converters live in their own environment: litert-torch pins
# typing-extensions and pydantic below what the serving stack uses.
EXTRAS_VENV := .venv-extras
EXTRAS_STAMP := $(EXTRAS_VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

$(EXTRAS_STAMP): pyproject.toml
	$(EXTRAS_VENV)/bin/python -m pip --version >/dev/null 2>&1 || \
	  { rm -rf $(EXTRAS_VENV) && $(PYTHON) -m venv $(EXTRAS_VENV); }
	$(EXTRAS_VENV)/bin/python -m pip install -q --upgrade pip
	$(EXTRAS_VENV)/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(EXTRAS_VENV)/bin/python -m pip install -q -e '.[tflite,coreml]' pytest==9.2.0
	rm -f $(EXTRAS_VENV)/.installed-*
	touch $@

.PHONY: install demo test lint test-extras
install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/resnetkit demo

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src

test-extras: $(EXTRAS_STAMP)
	$(EXTRAS_VENV)/bin/python -m pytest -q tests/test_export_extras.py
