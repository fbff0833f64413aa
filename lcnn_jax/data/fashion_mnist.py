"""Fashion-MNIST as a TFDS builder that needs no TensorFlow (array_record + Tensor features).

The four original IDX files are read from, in order: `$LCNN_DATA_DIR/fashion-mnist`,
`/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist`), or else downloaded from
their canonical location through TFDS's download manager.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from lcnn_jax.data.idx import read_idx
from lcnn_jax.errors import ConfigError

NAME = "lcnn_fashion_mnist"
URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

HOW_TO_GET = (
    "Fashion-MNIST not found: install Debian's package (sudo apt-get install dataset-fashion-mnist), "
    f"or put {', '.join(FILES.values())} into $LCNN_DATA_DIR/fashion-mnist, "
    f"or allow network access to {URL}"
)


def local_dirs() -> list[Path]:
    """Where the IDX files are looked for, in order."""
    dirs = []
    if os.environ.get("LCNN_DATA_DIR"):
        dirs.append(Path(os.environ["LCNN_DATA_DIR"]) / "fashion-mnist")
    dirs.append(DEBIAN_DIR)
    return dirs


def find_local_file(name: str) -> Path | None:
    """The first local copy of Fashion-MNIST file `name` (gzipped or not) in `local_dirs()`, or None."""
    for d in local_dirs():
        for candidate in (d / name, d / name.removesuffix(".gz")):
            if candidate.is_file():
                return candidate
    return None


def source_config() -> tfds.core.BuilderConfig:
    """A builder config named after the IDX files in use (paths, sizes, mtimes), or 'download'.

    Prepared data lives under data_dir/lcnn_fashion_mnist/CONFIG/VERSION, so a copy prepared
    from other files (a test's small IDX set, say) can never stand in for these.
    """
    found = {key: find_local_file(name) for key, name in FILES.items()}
    if not all(found.values()):
        return tfds.core.BuilderConfig(name="download", version=LcnnFashionMnist.VERSION)
    digest = hashlib.sha1()
    for key in sorted(found):
        st = found[key].stat()
        digest.update(f"{found[key].resolve()}:{st.st_size}:{int(st.st_mtime)}".encode())
    return tfds.core.BuilderConfig(name=f"local-{digest.hexdigest()[:12]}", version=LcnnFashionMnist.VERSION)


def reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether a TCP connection to the URL's host and port opens within `timeout` seconds."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


class LcnnFashionMnist(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST: 60k/10k 28x28x1 uint8 images, 10 classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "IDX files from a local directory or the canonical URL."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Fashion-MNIST (Xiao et al. 2017), read from the original IDX files.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
                    "label": tfds.features.Tensor(shape=(), dtype=np.int64),
                }
            ),
            supervised_keys=("image", "label"),
            # Keep the IDX order (TFDS otherwise hash-shuffles on write); the pipeline shuffles per epoch.
            disable_shuffling=True,
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager):
        paths = {key: find_local_file(name) for key, name in FILES.items()}
        if not all(paths.values()):
            # TFDS retries failed downloads for minutes; without network, say so at once.
            if not reachable(URL):
                raise ConfigError(f"{HOW_TO_GET} ({URL} is unreachable)")
            try:
                paths = dl_manager.download({key: URL + name for key, name in FILES.items()})
            except Exception as e:
                raise ConfigError(f"{HOW_TO_GET} (download failed: {type(e).__name__})") from None
        return {
            "train": self._generate_examples(paths["train_images"], paths["train_labels"]),
            "test": self._generate_examples(paths["test_images"], paths["test_labels"]),
        }

    def _generate_examples(self, images_path, labels_path):
        images = read_idx(images_path)
        labels = read_idx(labels_path)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
            raise ConfigError(f"{images_path}: expected N x 28 x 28 images matching {len(labels)} labels")
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image[..., None], "label": int(label)}
