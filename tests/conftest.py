"""Shared fixtures: a tiny Fashion-MNIST-shaped IDX dataset, isolated TFDS/wandb directories."""

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from lcnn_jax.data.idx import write_idx

# wandb must never prompt or reach the network from tests, and nothing a test prepares may land
# in the user's TFDS data dir (a test's tiny Fashion-MNIST must never shadow the real one).
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ["TFDS_DATA_DIR"] = tempfile.mkdtemp(prefix="lcnn-tests-tfds-")

# Examples in the tiny dataset's train and test splits (the `tiny_data` fixture).
N_TRAIN, N_TEST = 512, 200


def make_idx_dataset(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, seed: int = 0) -> Path:
    """Write the four Fashion-MNIST IDX files of a small learnable dataset into root/fashion-mnist.

    Class c is noise plus a bright horizontal band at rows 2c..2c+7 and a brightness offset of
    12c: low-frequency structure that survives crops, flips and resizing, so a small CNN
    separates the classes within a few dozen steps.
    """
    rng = np.random.default_rng(seed)
    templates = np.zeros((10, 28, 28))
    for c in range(10):
        templates[c, 2 * c : 2 * c + 8] = 255
        templates[c] += 12 * c
    out = root / "fashion-mnist"
    out.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n)
        images = np.clip(templates[labels] * 0.7 + rng.normal(0, 40, (n, 28, 28)), 0, 255)
        write_idx(out / f"{prefix}-images-idx3-ubyte.gz", images.astype(np.uint8))
        write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """(LCNN_DATA_DIR, TFDS data_dir) holding the tiny dataset; the TFDS copy is prepared once."""
    root = tmp_path_factory.mktemp("lcnn_data")
    make_idx_dataset(root)
    return root, root / "tfds"


@pytest.fixture
def tiny_env(tiny_data, monkeypatch):
    """Point LCNN_DATA_DIR at the tiny dataset; returns the TFDS data_dir to pass as data.data_dir."""
    root, tfds_dir = tiny_data
    monkeypatch.setenv("LCNN_DATA_DIR", str(root))
    return tfds_dir
