# Two targets do the whole set-up on a fresh machine (Python 3.11, network to PyPI only):
#   make run   - create the venv, then `bench run --tasks all` on the built-in offline suite and print the leaderboard
#   make test  - create the venv, then run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.bench-installed

.PHONY: setup run test bench-scripts clean

setup: $(STAMP)

# torch first, pinned (the CPU build on this machine kind; the CUDA build on a GPU machine), then the lock with
# --no-build-isolation so fairseq-fixed's C++ build uses that torch instead of pulling another one.
$(STAMP): pyproject.toml requirements/lock.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0 numpy==2.4.6 Cython==3.3.1 setuptools==80.10.2 wheel
	$(PY) -m pip install -q --no-build-isolation -r requirements/lock.txt
	$(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

run: setup
	$(VENV)/bin/bench run --tasks all

test: setup
	$(PY) -m pytest -q

bench-scripts: setup
	$(PY) benchmarks/bench_features.py
	$(PY) benchmarks/bench_prompt_speed.py

clean:
	rm -rf $(VENV) .bench results
