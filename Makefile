# Two commands do all set-up: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
AESARA_VENV ?= .venv-aesara
APY := $(AESARA_VENV)/bin/python
PYTEST_ARGS ?=
DEMO_DIR ?= demo-run

.PHONY: demo test test-fast test-aesara lint bench docs clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,mpi]'
	touch $@

# Aesara 2.9 needs numpy < 2, so it gets its own venv; symtrain goes in without its PyTensor pins.
# mpi4py + mpich (the `mpi` extra's pins) let the MPI equivalence test run on the Aesara backend too.
$(AESARA_VENV)/.installed: pyproject.toml
	test -x $(APY) || $(PYTHON) -m venv $(AESARA_VENV)
	$(APY) -m pip install --quiet --upgrade pip
	$(APY) -m pip install --quiet 'aesara==2.9.4' 'numpy==1.26.4' 'scipy==1.12.0' 'tqdm==4.70.1' \
		'pytest==9.2.0' 'hypothesis==6.170.15' 'mpi4py==4.1.2' 'mpich==5.0.2'
	$(APY) -m pip install --quiet --no-deps -e .
	touch $@

demo: $(VENV)/.installed
	$(PY) -m symtrain.demo --out $(DEMO_DIR)

test: lint test-fast test-aesara

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check symtrain tests benchmarks examples

test-fast: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 $(PYTEST_ARGS)

# Only test files that contain backend-marked tests are collected: the others may import what the Aesara
# venv lacks (numba, libcst, scikit-learn), and a collection error would fail the run.
test-aesara: $(AESARA_VENV)/.installed
	SYMTRAIN_BACKEND=aesara $(APY) -m pytest -q -m backend -p no:cacheprovider $(PYTEST_ARGS) \
		$$(grep -l 'pytest.mark.backend' tests/test_*.py)

bench: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet 'torch==2.13.0' 'psutil==7.2.2'
	$(PY) -m benchmarks.run

docs: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -e '.[docs]'
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) $(AESARA_VENV) $(DEMO_DIR) site build *.egg-info
