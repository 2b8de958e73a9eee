# The two commands of the course:
#   make book   create .venv, install, execute every chapter at RECFUNNEL_PROFILE (default
#               cpu) and build the static HTML book with warnings as errors
#   make test   create .venv, install, lint, run the unit tests, execute every chapter once
#               at the smoke profile, check what it recorded (its glued values, and with
#               nbval the marked cells), and build the smoke book from those executions
#   make student  write student/NN_name.ipynb: each chapter without its exercises' solutions
#   make colab  after the book, write the Colab copies of the chapters into _build/colab
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PROFILE := $(or $(RECFUNNEL_PROFILE),cpu)
BOOK_OUT ?= .# where _build/ goes; the tests build the smoke book into _build/smoke
EXECUTED ?=# a folder of executed chapters: build the book from them, executing nothing

.PHONY: book test lint student colab clean

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
ifdef EXECUTED
	$(BIN)/python -m recfunnel.book stage $(EXECUTED) $(BOOK_OUT)/site
	RECFUNNEL_PROFILE=$(PROFILE) $(BIN)/jupyter-book build $(BOOK_OUT)/site \
		--path-output $(BOOK_OUT) -W -n --keep-going
else
	@out=$(BOOK_OUT)/_build; stamp=$$($(BIN)/python -m recfunnel.notebook stamp $(PROFILE)); \
	if [ "$$(cat $$out/.exec-stamp 2>/dev/null)" != "$$stamp" ]; then \
		echo "sources or profile changed: every chapter is executed afresh at '$(PROFILE)'"; \
		rm -rf $$out/.jupyter_cache $$out/.doctrees $$out/jupyter_execute $$out/figures; \
	fi; \
	RECFUNNEL_FIGURES=$(abspath $(BOOK_OUT))/_build/figures \
	RECFUNNEL_PROFILE=$(PROFILE) $(BIN)/jupyter-book build . --path-output $(BOOK_OUT) \
		-W -n --keep-going && echo "$$stamp" > $$out/.exec-stamp
endif
	@echo "The book is at $(abspath $(BOOK_OUT))/_build/html/index.html"

test: $(INSTALLED)
	$(BIN)/ruff check src tests benchmarks notebooks
	RECFUNNEL_PROFILE=smoke $(BIN)/python -m pytest tests --durations=10 -p no:cacheprovider

student: $(INSTALLED)
	$(BIN)/python -m recfunnel.book student

# The notebooks the Colab buttons open, from the chapters this book build executed: the
# publishing workflow pushes _build/colab/ to where the buttons point
colab: book
	$(BIN)/python -m recfunnel.book colab $(BOOK_OUT)/_build/jupyter_execute \
		$(BOOK_OUT)/_build/colab $(PROFILE)

lint: $(INSTALLED)
	$(BIN)/ruff check src tests benchmarks notebooks

clean:
	rm -rf _build
