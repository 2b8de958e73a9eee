# The two commands of the course:
#   make book   create .venv, install, execute every chapter at RECFUNNEL_PROFILE (default
#               cpu) and build the static HTML book with warnings as errors
#   make test   create .venv, install, lint, run the unit tests, execute every chapter at
#               the smoke profile and check what it recorded, run nbval, build the book
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PROFILE := $(or $(RECFUNNEL_PROFILE),cpu)
BOOK_OUT ?= .# where _build/ goes; the tests build the smoke book into _build/smoke

.PHONY: book test lint clean

# Installs once, and again only when pyproject.toml changes. torch 2.13.0 goes in first
# when none is importable, so a CPU-only machine never pulls a multi-GB CUDA build.
$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install "torch==2.13.0"
	$(BIN)/python -m pip install -e ".[dev]"
	@touch $(INSTALLED)

# Jupyter Book's execution cache keys on cell text only, and Sphinx re-reads only the pages
# whose files changed: the stamp (a hash of src/, pyproject.toml and the profile) clears
# both whenever anything else that a chapter runs has changed.
book: $(INSTALLED)
	@out=$(BOOK_OUT)/_build; stamp=$$($(BIN)/python -m recfunnel.notebook stamp $(PROFILE)); \
	if [ "$$(cat $$out/.exec-stamp 2>/dev/null)" != "$$stamp" ]; then \
		echo "sources or profile changed: every chapter is executed afresh at '$(PROFILE)'"; \
		rm -rf $$out/.jupyter_cache $$out/.doctrees $$out/jupyter_execute; \
	fi; \
	RECFUNNEL_PROFILE=$(PROFILE) $(BIN)/jupyter-book build . --path-output $(BOOK_OUT) \
		-W -n --keep-going && echo "$$stamp" > $$out/.exec-stamp
	@echo "The book is at $(abspath $(BOOK_OUT))/_build/html/index.html"

test: $(INSTALLED)
	$(BIN)/ruff check src tests benchmarks notebooks
	RECFUNNEL_PROFILE=smoke $(BIN)/python -m pytest tests notebooks --nbval-lax \
		--durations=10 -p no:cacheprovider

lint: $(INSTALLED)
	$(BIN)/ruff check src tests benchmarks notebooks

clean:
	rm -rf _build
