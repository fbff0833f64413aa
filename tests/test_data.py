"""The Fashion-MNIST TFDS builder (IDX files, download path), data sources, and the grain pipeline."""

import itertools

import numpy as np
import pytest
from conftest import N_TEST, N_TRAIN

from lcnn_jax.config import DataConfig
from lcnn_jax.data import augment, fashion_mnist
from lcnn_jax.data.idx import read_idx, write_idx
from lcnn_jax.data.pipeline import Preprocess, TrainBatches, eval_batches, normalisation
from lcnn_jax.data.sources import load_split
from lcnn_jax.errors import ConfigError


def test_idx_round_trip_and_bad_files(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("x.gz", "x"):
        write_idx(tmp_path / name, a)
        np.testing.assert_array_equal(read_idx(tmp_path / name), a)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="bad magic"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x00" * 3)
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "short")


def test_builder_reads_the_idx_files(tiny_env, tiny_data):
    root, _ = tiny_data
    train = load_split("fashion_mnist", "train", str(tiny_env))
    test = load_split("fashion_mnist", "test", str(tiny_env))
    want = read_idx(root / "fashion-mnist" / "train-images-idx3-ubyte.gz")
    assert (train.num_examples, test.num_examples, train.num_classes, train.channels) == (N_TRAIN, N_TEST, 10, 1)
    np.testing.assert_array_equal(train.images[..., 0], want)
    np.testing.assert_array_equal(train.labels, read_idx(root / "fashion-mnist" / "train-labels-idx1-ubyte.gz"))
    assert load_split("fashion_mnist", "train", str(tiny_env), max_examples=100).num_examples == 100
    with pytest.raises(ConfigError, match="no split 'validation'"):
        load_split("fashion_mnist", "validation", str(tiny_env))


def test_prepared_copies_are_keyed_by_their_source_files(tiny_env, tiny_data, tmp_path, monkeypatch):
    assert load_split("fashion_mnist", "train", str(tiny_env)).num_examples == N_TRAIN
    other = tmp_path / "other"
    from conftest import make_idx_dataset

    make_idx_dataset(other, n_train=300, n_test=50, seed=1)
    monkeypatch.setenv("LCNN_DATA_DIR", str(other))
    # Same data_dir, other IDX files: a separate prepared copy, never the cached one.
    assert load_split("fashion_mnist", "train", str(tiny_env)).num_examples == 300
    # ...and preparing it left the original copy as it was.
    monkeypatch.setenv("LCNN_DATA_DIR", str(tiny_data[0]))
    assert load_split("fashion_mnist", "train", str(tiny_env)).num_examples == N_TRAIN


class _OfflineDownloads:
    """Stands in for TFDS's download manager on a machine without network."""

    def __init__(self):
        self.requested = None

    def download(self, urls):
        self.requested = urls
        raise OSError("network unreachable")


def test_download_path_asks_for_the_canonical_files_then_explains(tmp_path, monkeypatch):
    monkeypatch.setenv("LCNN_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(fashion_mnist, "reachable", lambda url: True)  # as if online: go up to the network call
    builder = fashion_mnist.LcnnFashionMnist(config=fashion_mnist.source_config(), data_dir=str(tmp_path / "tfds"),
                                             file_format="array_record")
    assert builder.builder_config.name == "download"
    dl = _OfflineDownloads()
    with pytest.raises(ConfigError) as e:
        builder._split_generators(dl)
    assert dl.requested == {k: fashion_mnist.URL + v for k, v in fashion_mnist.FILES.items()}
    assert "sudo apt-get install dataset-fashion-mnist" in str(e.value)
    assert "$LCNN_DATA_DIR/fashion-mnist" in str(e.value)


def test_without_network_the_error_comes_at_once(tmp_path, monkeypatch):
    monkeypatch.setenv("LCNN_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(fashion_mnist, "URL", "http://127.0.0.1:9/")  # closed port: refused at once
    assert not fashion_mnist.reachable(fashion_mnist.URL)
    builder = fashion_mnist.LcnnFashionMnist(config=fashion_mnist.source_config(), data_dir=str(tmp_path / "tfds"),
                                             file_format="array_record")
    dl = _OfflineDownloads()
    with pytest.raises(ConfigError, match="is unreachable"):
        builder._split_generators(dl)
    assert dl.requested is None


def test_unknown_or_unprepared_tfds_datasets(tmp_path):
    with pytest.raises(ConfigError, match="unknown TFDS dataset 'no_such_dataset'"):
        load_split("no_such_dataset", "train", str(tmp_path))
    with pytest.raises(ConfigError, match="is not prepared.*tfds build cifar10 --file_format=array_record"):
        load_split("cifar10", "train", str(tmp_path))


def _pipeline(tiny_env, **cfg):
    split = load_split("fashion_mnist", "train", str(tiny_env))
    mean, std = normalisation(split)
    prep = Preprocess(32, 3, mean, std)
    return split, prep, TrainBatches(split, DataConfig(**cfg), prep, batch_size=64, seed=7)


def test_train_batches_are_deterministic_resumable_and_shuffled_per_epoch(tiny_env):
    _, prep, batches = _pipeline(tiny_env, randaugment_ops=2)
    assert batches.steps_per_epoch == N_TRAIN // 64
    run = list(itertools.islice(batches.from_step(0), 20))
    again = list(itertools.islice(batches.from_step(0), 20))
    resumed = list(itertools.islice(batches.from_step(13), 7))
    for a, b in zip(run, again):
        np.testing.assert_array_equal(a["image"], b["image"])
    for a, b in zip(run[13:], resumed):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    assert run[0]["image"].shape == (64, 32, 32, 3) and run[0]["image"].dtype == np.float32
    assert not np.array_equal(run[0]["label"], run[8]["label"])  # epoch 2 is reshuffled
    other_seed = TrainBatches(batches.split, batches.cfg, prep, 64, seed=8)
    assert not np.array_equal(next(other_seed.from_step(0))["label"], run[0]["label"])


def test_eval_batches_cover_the_split_once_with_padding_masked(tiny_env):
    split = load_split("fashion_mnist", "test", str(tiny_env))
    prep = Preprocess(28, 1, (0.5,), (0.5,))
    batches = list(eval_batches(split, DataConfig(), prep, 64))
    assert len(batches) == 4 and all(b["image"].shape == (64, 28, 28, 1) for b in batches)
    masks = np.concatenate([b["mask"] for b in batches])
    assert masks.sum() == 200 and not masks[200:].any()
    labels = np.concatenate([b["label"] for b in batches])[:200]
    np.testing.assert_array_equal(labels, split.labels)
    np.testing.assert_allclose(batches[0]["image"], (split.images[:64] / 255.0 - 0.5) / 0.5, atol=1e-6)


def test_preprocess_resize_normalise_and_channels():
    m = augment.resize_matrix(28, 32)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=1e-6)
    assert augment.resize_matrix(64, 16).shape == (16, 64)
    flat = np.full((2, 28, 28, 1), 128, np.uint8)
    out = Preprocess(32, 3, (0.5,), (0.25,))(flat)
    assert out.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(out, (128 / 255 - 0.5) / 0.25, rtol=1e-4)


def test_augmentations_keep_shapes_and_change_pixels():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 28, 28, 1)).astype(np.uint8)
    cropped = augment.random_crop(images, 4, np.random.default_rng(1))
    flipped = augment.random_flip(images, np.random.default_rng(1))
    ra = augment.rand_augment(images, 2, 15, np.random.default_rng(1))
    for out in (cropped, flipped, ra):
        assert out.shape == images.shape and out.dtype == np.uint8
        assert not np.array_equal(out, images)
    np.testing.assert_array_equal(ra, augment.rand_augment(images, 2, 15, np.random.default_rng(1)))
    for name, op in augment.RAND_AUGMENT_OPS.items():
        assert op(images[0], 10, 1.0).shape == (28, 28, 1), name
