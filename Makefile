# One4D. `make demo` runs the main job on the embedded default; `make test` runs the test suite;
# `make view` opens the 4D viewer on the demo's full-video result (`make view FOLDER=outputs/full` on another).
# Each creates .venv and installs everything on first use (CPU torch 2.13.0 unless TORCH is set).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
FOLDER ?= outputs/demo/full

.PHONY: demo test view venv inspect bench bench-train tiny-model ablation clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test,train,data]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) scripts/demo.py

# The suite in two runs, both always: the one-core tests TEST_WORKERS at a time (pytest-xdist; a file per worker, so a
# module's fixtures are built once), then the tests marked multicore (two processes or two threads) alone, which would
# otherwise share their cores. 2 workers: CI's two cores (a container's CPU count can be the host's); raise it on a
# bigger machine. `.venv/bin/python -m pytest tests` runs the same tests in one process.
TEST_WORKERS ?= 2

test: venv
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile -m "not multicore"; one_core=$$?; \
	$(PY) -m pytest tests -m multicore; multicore=$$?; \
	test $$one_core -eq 0 && test $$multicore -eq 0

view: venv
	$(PY) scripts/view.py $(FOLDER) $(VIEW_ARGS)

inspect: venv
	$(PY) scripts/inspect_model.py

tiny-model: venv
	$(PY) scripts/make_tiny_model.py

ablation: venv
	$(PY) scripts/ablation.py

bench: venv
	$(PY) benchmarks/bench_dlc.py

bench-train: venv
	OMP_NUM_THREADS=1 $(PY) benchmarks/bench_train.py

clean:
	rm -rf $(VENV) outputs
