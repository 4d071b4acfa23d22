# Two entry points for a fresh machine (Python >= 3.11 and git):
#   make demo   create .venv, then run the main job on the bundled tree
#   make test   install the system packages the build tests need (as root with
#               apt-get; otherwise stop with one line naming them), create .venv,
#               then run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test slow bench clean sysdeps

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

# Kbuild's flex, bison, bc, libelf-dev, libssl-dev, and xz, patch, git: checked
# (and installed when possible) before any test runs (refactor/kernel/preflight.py).
sysdeps:
	@$(PYTHON) -m refactor.kernel.preflight --install

test: sysdeps $(STAMP)
	$(BIN)/python -m pytest -q

slow: sysdeps $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# series_build_bench.py times the compile commands of a series' Kbuild output
# directory, with and without ccache (sysdeps installs it): the newest one
# tests/test_series.py (make test) or `kvm-refactor series --build` left in the
# cache.  Without one it says so and is not run.
SERIES_CMD = $(or $(KVM_REFACTOR_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kvm-refactor)/build/series-*-out/arch/x86/kvm/.x86.o.cmd

bench: sysdeps $(STAMP)
	$(BIN)/python bench/scan_bench.py
	$(BIN)/python bench/rewrite_bench.py --series
	$(BIN)/python bench/lint_bench.py
	$(BIN)/python bench/emulator_bench.py
	$(BIN)/python bench/cluster_bench.py
	$(BIN)/python bench/native_bench.py
	$(BIN)/python bench/port_bench.py
	$(BIN)/python bench/upstream_bench.py
	$(BIN)/python bench/hostile_bench.py
	@cmd=$$(ls -dt $(SERIES_CMD) 2>/dev/null | head -n1); \
	if [ -n "$$cmd" ]; then \
	  echo "$(BIN)/python bench/series_build_bench.py $${cmd%/arch/x86/kvm/.x86.o.cmd}"; \
	  $(BIN)/python bench/series_build_bench.py "$${cmd%/arch/x86/kvm/.x86.o.cmd}"; \
	else echo "series_build_bench: no series build output in the cache (make test makes one): not run"; fi

clean:
	rm -rf $(VENV) .pytest_cache
