PYTHON ?= python
.PHONY: install lint format test docs bench demo

install:
	$(PYTHON) -m pip install torch==2.13.0
	$(PYTHON) -m pip install -e ".[test,docs,dask]"

lint:
	ruff format --check pyro_contrast tests examples benchmarks docs
	ruff check pyro_contrast tests examples benchmarks docs
	lint-imports
	$(PYTHON) -m pytest -q -p no:cacheprovider --doctest-modules pyro_contrast

format:
	ruff format pyro_contrast tests examples benchmarks docs
	ruff check --fix pyro_contrast tests examples benchmarks docs

test:
	pytest

docs:
	$(PYTHON) -m sphinx -W -b html docs docs/_build/html

bench:
	$(PYTHON) benchmarks/bench_logmatmul.py
	$(PYTHON) benchmarks/bench_bridge.py
	$(PYTHON) benchmarks/bench_vmf.py

demo:
	pyro-contrast demo
