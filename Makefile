# Two entry points for a fresh machine (Python >= 3.11 and git):
#   make demo   create .venv, then run the main job on the bundled tree
#   make test   create .venv, then run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test slow bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/kvm-refactor scan fixtures/mini-kvm
	$(BIN)/kvm-refactor rewrite fixtures/mini-kvm
	$(BIN)/kvm-refactor emulate fuzz --seed 1 --events 20000
	$(BIN)/kvm-refactor emulate mutants

test: $(STAMP)
	$(BIN)/python -m pytest -q

slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python bench/scan_bench.py
	$(BIN)/python bench/rewrite_bench.py --series
	$(BIN)/python bench/lint_bench.py
	$(BIN)/python bench/emulator_bench.py

clean:
	rm -rf $(VENV) .pytest_cache
