# One venv for everything. `make demo` runs the main job, `make test` the test suite (`make test-fast`: its fast tier).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first, pinned to the release served from the machine's disk, so pip never pulls another build
	$(PY) -m pip install "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) studies/ablation.py

# tests/setup_test_hosts.sh: the SSH-cluster test's openssh-server and rsync (apt-get, as root; skipped when there)
test: $(STAMP)
	sh tests/setup_test_hosts.sh
	$(PY) -m pytest -q

# every module's behaviour in a few minutes: the study subprocesses and multi-node clusters (marked slow) left out
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/speed.py

clean:
	rm -rf $(VENV)
