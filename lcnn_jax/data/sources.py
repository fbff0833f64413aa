"""Dataset splits as TFDS data sources (array_record, no TensorFlow), loaded into RAM when they fit.

Fashion-MNIST uses lcnn's own builder and is prepared on first use into the TFDS `data_dir`.
Any other TFDS dataset must already be prepared there in array_record format; image features
are decoded with OpenCV (extra `[images]`) or Pillow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from lcnn_jax.data.catalog import KNOWN
from lcnn_jax.errors import ConfigError

IN_MEMORY_LIMIT_BYTES = 4 << 30  # decode once into numpy below this (measured ~100x faster than per-record)


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: either decoded arrays (`images` uint8 NHWC) or a lazy record source."""

    name: str
    num_examples: int
    num_classes: int
    channels: int
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    source: Any = None  # random-access records {'image', 'label'} when not in memory

    @property
    def in_memory(self) -> bool:
        """Whether the split was decoded into numpy arrays."""
        return self.images is not None


def builder_for(dataset: str, data_dir: str | None):
    """The TFDS builder of `dataset`, prepared (Fashion-MNIST) or checked to be prepared (others)."""
    import tensorflow_datasets as tfds

    if dataset == "fashion_mnist":
        import logging

        from lcnn_jax.data.fashion_mnist import LcnnFashionMnist, source_config

        # TFDS warns about every config not declared in BUILDER_CONFIGS; ours are per source files.
        absl_logger = logging.getLogger("absl")
        level = absl_logger.level
        absl_logger.setLevel(logging.ERROR)
        try:
            builder = LcnnFashionMnist(config=source_config(), data_dir=data_dir, file_format="array_record")
        finally:
            absl_logger.setLevel(level)
        if not builder.is_prepared():
            builder.download_and_prepare()
        return builder
    try:
        builder = tfds.builder(dataset, data_dir=data_dir)
    except Exception as e:  # tfds raises DatasetNotFoundError (and friends) with long messages
        raise ConfigError(f"unknown TFDS dataset {dataset!r} ({type(e).__name__}); use fashion_mnist or a TFDS name") from None
    if not builder.is_prepared():
        raise ConfigError(
            f"TFDS dataset {dataset!r} is not prepared in {builder.data_dir!r}: on a machine with network run "
            f"`tfds build {dataset} --file_format=array_record --data_dir=DATA_DIR` and set data.data_dir=DATA_DIR"
        )
    if builder.info.file_format.value != "array_record":
        raise ConfigError(
            f"TFDS dataset {dataset!r} is stored as {builder.info.file_format.value}; random access needs "
            f"array_record: rebuild with `tfds build {dataset} --file_format=array_record`"
        )
    return builder


def load_split(dataset: str, split: str, data_dir: str | None = None, max_examples: int = 0) -> Split:
    """Open `split` of `dataset`; decode it into RAM if it fits, else keep random-access records."""
    builder = builder_for(dataset, data_dir)
    if split not in builder.info.splits:
        raise ConfigError(f"dataset {dataset!r} has no split {split!r}; it has {', '.join(builder.info.splits)}")
    features = builder.info.features
    label = features["label"]
    # A ClassLabel knows its class count; a plain integer label (our Fashion-MNIST builder) takes the catalog's.
    num_classes = getattr(label, "num_classes", None) or KNOWN.get(dataset, (None,))[0]
    if num_classes is None:
        raise ConfigError(f"dataset {dataset!r} has no ClassLabel 'label' feature to take the class count from")
    shape = features["image"].shape
    source = builder.as_data_source(split=split)
    n = len(source) if not max_examples else min(max_examples, len(source))
    channels = shape[-1]
    fixed = all(d is not None for d in shape)
    if fixed and n * int(np.prod(shape)) <= IN_MEMORY_LIMIT_BYTES:
        images = np.empty((n,) + tuple(shape), np.uint8)
        labels = np.empty((n,), np.int32)
        for start in range(0, n, 8192):
            records = source.__getitems__(list(range(start, min(n, start + 8192))))
            images[start : start + len(records)] = np.stack([r["image"] for r in records])
            labels[start : start + len(records)] = [r["label"] for r in records]
        return Split(split, n, num_classes, channels, images=images, labels=labels)
    return Split(split, n, num_classes, channels, source=source)
