"""The grain input pipeline: per-epoch seeded shuffling, augmentation, resize, normalisation, batching.

A training batch is a pure function of (seed, epoch, batch index), so a resumed run sees exactly
the batches an uninterrupted one would. Batches come out as numpy dicts {'image': float32 NHWC
at the model's resolution and channel count, 'label': int32, 'mask': bool (eval padding)}.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Iterator

import grain
import numpy as np

from lcnn_jax.config import DataConfig
from lcnn_jax.data import augment
from lcnn_jax.data.sources import Split
from lcnn_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """What every batch goes through on its way to the model."""

    resolution: int
    channels: int  # the model's input channels (grayscale is repeated to RGB)
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __call__(self, images_uint8: np.ndarray) -> np.ndarray:
        """uint8 NHWC -> normalised float32 at the model's resolution and channels."""
        x = images_uint8.astype(np.float32) * (1.0 / 255.0)
        x = augment.resize(x, self.resolution)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        if x.shape[-1] != self.channels:
            x = np.repeat(x, self.channels // x.shape[-1], axis=-1)
        return x


def normalisation(split: Split) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1] units, from the first 10k training images (deterministic)."""
    if not split.in_memory:
        return ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) if split.channels == 3 else ((0.5,), (0.5,))
    sample = split.images[:10000].astype(np.float64) / 255.0
    mean, std = sample.mean(axis=(0, 1, 2)), sample.std(axis=(0, 1, 2)) + 1e-6
    return tuple(map(float, mean)), tuple(map(float, std))


def _work_size(split: Split, prep: Preprocess) -> int:
    """Side of the uint8 images augmentation works on: as stored, or lazy records resized to this."""
    return split.images.shape[1] if split.in_memory else max(prep.resolution, 32)


def _fixed_size(image: np.ndarray, size: int) -> np.ndarray:
    """A lazily read record resized (aspect ignored) to the pipeline's working size."""
    x = augment.resize(image[None].astype(np.float32), size)[0]
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _gather(split: Split, indices: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    if split.in_memory:
        return split.images[indices], split.labels[indices]
    records = split.source.__getitems__([int(i) for i in indices])
    images = np.stack([_fixed_size(r["image"], size) for r in records])
    return images, np.asarray([r["label"] for r in records], np.int32)


def _read_options(cfg: DataConfig) -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=max(1, min(cfg.prefetch, 4)), prefetch_buffer_size=max(1, cfg.prefetch))


def _iterate(ds: grain.MapDataset, cfg: DataConfig):
    it = ds.to_iter_dataset(_read_options(cfg))
    if cfg.workers > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's worker processes read absl flags
            flags.FLAGS(["lcnn"], known_only=True)
        it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.workers))
    return iter(it)


class TrainBatches:
    """Infinite, resumable stream of augmented training batches."""

    def __init__(self, split: Split, cfg: DataConfig, prep: Preprocess, batch_size: int, seed: int):
        if split.num_examples < batch_size:
            raise ConfigError(f"data.batch_size={batch_size} exceeds the {split.num_examples} training examples")
        self.split, self.cfg, self.prep, self.batch_size, self.seed = split, cfg, prep, batch_size, seed
        self.steps_per_epoch = split.num_examples // batch_size
        self.work_size = _work_size(split, prep)

    def _batch(self, epoch: int, index: int, indices: np.ndarray) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, epoch, index))
        images, labels = _gather(self.split, indices, self.work_size)
        images = augment.rand_augment(images, self.cfg.randaugment_ops, self.cfg.randaugment_magnitude, rng)
        images = augment.random_crop(images, self.cfg.crop_padding, rng)
        if self.cfg.flip:
            images = augment.random_flip(images, rng)
        return {"image": self.prep(images), "label": labels.astype(np.int32)}

    def epoch(self, epoch: int, start: int = 0) -> grain.MapDataset:
        """Batches of one epoch from batch `start` on, as a grain dataset."""
        order = grain.MapDataset.range(self.split.num_examples).shuffle(seed=(self.seed * 1_000_003 + epoch) % 2**31)
        batches = order.batch(self.batch_size, drop_remainder=True)
        batches = batches.map_with_index(lambda i, idx: self._batch(epoch, i, np.asarray(idx)))
        return batches[start:]

    def from_step(self, step: int) -> Iterator[dict[str, np.ndarray]]:
        """Every batch from global step `step` on, across epochs."""
        epoch, start = divmod(step, self.steps_per_epoch)
        for e in itertools.count(epoch):
            yield from _iterate(self.epoch(e, start if e == epoch else 0), self.cfg)


def eval_batches(split: Split, cfg: DataConfig, prep: Preprocess, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """The whole split in order, the last batch padded to `batch_size` with mask=False rows."""
    work = _work_size(split, prep)

    def load(i: int, idx) -> dict[str, np.ndarray]:
        idx = np.asarray(idx)
        images, labels = _gather(split, idx, work)
        pad = batch_size - len(idx)
        mask = np.concatenate([np.ones(len(idx), bool), np.zeros(pad, bool)])
        images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
        labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
        return {"image": prep(images), "label": labels.astype(np.int32), "mask": mask}

    ds = grain.MapDataset.range(split.num_examples).batch(batch_size).map_with_index(load)
    return _iterate(ds, cfg)
