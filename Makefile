# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set up here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := $(VENV)/.installed-torch
FMNIST := /usr/share/datasets/fashion-mnist
# Two workers, one test file each at a time: most tests are single-threaded XLA compiles, and a
# file's module-scoped fixtures (a shared tiny training run) stay in one process.
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: all install data demo test test-fast clean

all: demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The [torch] extra (torch, torchvision, timm: ~6 GB) is only needed by the parity tests and the
# PyTorch benchmarks, so `make demo` does without it and `make test` adds it.
# W&B's `sweeps` package holds the sweep-config JSON schema the tests check our files against;
# it pins numpy<2 but runs fine with numpy 2, hence --no-deps.
$(TORCH): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,torch]'
	$(BIN)/python -m pip install --quiet --no-deps 'sweeps==0.3.0'
	touch $(TORCH)

install: $(STAMP) data

# From Debian when apt is available (a new machine has no package lists, hence the update):
# the Fashion-MNIST IDX files, and tcmalloc, under which XLA:CPU trains ~1.8x faster (see
# lcnn_jax/runtime.py). Without apt or root the data is fetched through TFDS's download manager
# at first use and training runs on glibc malloc, so this step only warns.
APT_PACKAGES := dataset-fashion-mnist libtcmalloc-minimal4
data:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ] && ls /usr/lib/*/libtcmalloc_minimal.so.4 >/dev/null 2>&1; then \
	  echo "apt: fashion-mnist and tcmalloc already installed"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES) >/dev/null ) \
	    && echo "apt: installed $(APT_PACKAGES)" \
	    || echo "apt: install of $(APT_PACKAGES) failed; Fashion-MNIST will be downloaded through TFDS when needed"; \
	else \
	  echo "apt: no apt-get; Fashion-MNIST will be downloaded through TFDS when needed"; \
	fi

# The main job: the scaling-study quickstart sweep (depth/width/resolution/compound at 1x/2x/3x
# MACs, 2 seeds) on Fashion-MNIST; writes workdirs/sweeps/quickstart/{results.csv,report/}.
demo: install
	$(BIN)/lcnn sweep run sweeps/quickstart.yaml --workers 2

# Tests train too, so they run under tcmalloc as `lcnn train` does (empty when absent). The path
# comes from lcnn_jax.runtime, asked at recipe time: the venv need not exist when make starts.
FIND_TCMALLOC := $(BIN)/python -c 'from lcnn_jax.runtime import find_tcmalloc; print(find_tcmalloc() or "")'

# pytest exits 5 when it collects nothing (e.g. a -k or -m filter that matches no test):
# report that plainly instead of failing as if a test had broken.
test: install $(TORCH)
	@tcmalloc=$$($(FIND_TCMALLOC)); \
	LD_PRELOAD=$$tcmalloc $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): nothing to run"; exit 0; fi; exit $$rc

test-fast: install $(TORCH)
	$(MAKE) test PYTEST_ARGS='$(PYTEST_ARGS) -m "not slow"'

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
