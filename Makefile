# Two commands on a fresh machine: `make demo` and `make test`. Everything else is set up here.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  := $(VENV)/.installed-torch
FMNIST := /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?=

.PHONY: all install data demo test test-fast clean

all: demo

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The [torch] extra (torch, torchvision, timm: ~6 GB) is only needed by the parity tests and the
# PyTorch benchmarks, so `make demo` does without it and `make test` adds it.
$(TORCH): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,torch]'
	touch $(TORCH)

install: $(STAMP) data

# Fashion-MNIST IDX files from Debian's dataset-fashion-mnist, when apt is available. A new
# machine has no package lists, hence the update. Without apt (or root) the data is fetched
# through TFDS's download manager at first use instead, so this step only warns.
data:
	@if [ -f $(FMNIST)/train-images-idx3-ubyte.gz ] || [ -f $(FMNIST)/train-images-idx3-ubyte ]; then \
	  echo "fashion-mnist: found in $(FMNIST)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null ) \
	    && echo "fashion-mnist: installed to $(FMNIST)" \
	    || echo "fashion-mnist: apt-get install failed; it will be downloaded through TFDS when needed"; \
	else \
	  echo "fashion-mnist: no apt-get; it will be downloaded through TFDS when needed"; \
	fi

# Until the sweep runner lands, the main job is the counter table for every preset.
demo: install
	$(BIN)/lcnn count --all

# pytest exits 5 when it collects nothing (e.g. a -k or -m filter that matches no test):
# report that plainly instead of failing as if a test had broken.
test: install $(TORCH)
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests (exit 5): nothing to run"; exit 0; fi; exit $$rc

test-fast: install $(TORCH)
	$(MAKE) test PYTEST_ARGS='-m "not slow"'

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
