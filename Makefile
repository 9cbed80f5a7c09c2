# `make run`: install and run the main job. `make test`: install and run the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch; pip on this machine takes it from local disk. Override elsewhere,
# e.g. `make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"`.
TORCH_SPEC ?= torch==2.13.0
export XLA_PYTHON_CLIENT_PREALLOCATE ?= false
# pytest worker processes (pytest-xdist): one per core of the 2-core machines this is built on;
# --dist loadscope keeps each test module on one worker, so a module's fixtures are built once
TEST_WORKERS ?= 2
TEST_DIST ?= loadscope
# one OpenMP/BLAS thread per test worker: two workers already fill the two cores (beside two
# benchmark trainings, load ~5, the suite took 600-608 s with it and 678 s without)
test test-all: export OMP_NUM_THREADS ?= 1

.PHONY: install run test test-all bench lint clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev,distributed]"
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/glsbi quickstart --out runs/quickstart

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist $(TEST_DIST)

test-all: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist $(TEST_DIST) -m ""

bench: install
	$(PY) benchmarks/solver_throughput.py

lint: install
	$(VENV)/bin/ruff check glsbi_plugin tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
