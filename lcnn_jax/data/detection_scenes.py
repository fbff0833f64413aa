"""Synthetic detection scenes (Fashion-MNIST items pasted onto a canvas) as an offline TFDS builder.

Each scene is a black `canvas x canvas` grayscale image (1 channel, as Fashion-MNIST; the
pipeline repeats it to the model's channels) holding 1-6 items drawn from Fashion-MNIST's train
split (scene train split) or test split (scene test split), each resized to a log-uniform side
in [min_side, max_side] pixels and pasted at a uniform position. Pasted items never overlap an
earlier one at IoU >= max_iou (positions are resampled). Boxes are normalised `(x1, y1, x2, y2)`
corners tight to the item's ink: pixels below `INK` are cleared before pasting, and pasting takes
the pixelwise maximum, so every non-zero pixel lies in some box and every box edge touches ink.
A scene is a pure function of (seed, split, index): the same spec builds identical records.

`load_detection_split` opens these scenes, or TFDS 'voc' / 'coco' once prepared, as records
{'image' uint8 HWC, 'boxes' float32 (n, 4) normalised xyxy, 'labels' int64 (n,)}.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer

from lcnn_jax.data import fashion_mnist
from lcnn_jax.data.augment import resize_matrix
from lcnn_jax.data.idx import read_idx
from lcnn_jax.errors import ConfigError

NAME = "lcnn_detection_scenes"
TFDS_DETECTION = ("voc", "coco")  # TFDS families whose 'objects' feature we map
CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")
INK = 8  # pixels fainter than this are cleared, so boxes hug the visible item, not stray specks
_MAX_TRIES = 30  # placements tried per object before giving up on it (the scene keeps >= 1 object)
IN_MEMORY_LIMIT_BYTES = 4 << 30


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """What scenes the builder makes; every field is part of the prepared copy's name."""

    canvas: int = 128
    train_scenes: int = 6000
    test_scenes: int = 1000
    min_objects: int = 1
    max_objects: int = 6
    min_side: int = 12
    max_side: int = 96
    max_iou: float = 0.3
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.min_objects <= self.max_objects:
            raise ConfigError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if not 4 <= self.min_side <= self.max_side <= self.canvas:
            raise ConfigError(
                f"need 4 <= min_side <= max_side <= canvas, got {self.min_side}, {self.max_side}, {self.canvas}"
            )
        if self.train_scenes < 1 or self.test_scenes < 1:
            raise ConfigError("train_scenes and test_scenes must be >= 1")
        if not 0 < self.max_iou <= 1:
            raise ConfigError(f"max_iou must be in (0, 1], got {self.max_iou}")

    def builder_config(self) -> tfds.core.BuilderConfig:
        """A TFDS config named after this spec and the Fashion-MNIST files it draws items from."""
        source = fashion_mnist.source_config().name  # local files (digest) or 'download'
        digest = hashlib.sha1(f"{dataclasses.astuple(self)}:{source}".encode()).hexdigest()[:10]
        name = f"c{self.canvas}-n{self.train_scenes}-{self.test_scenes}-s{self.seed}-{digest}"
        return tfds.core.BuilderConfig(name=name, version=LcnnDetectionScenes.VERSION, description=repr(self))


def _fashion_items(split: str, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 28 x 28 uint8, labels N) of Fashion-MNIST's `split`, from the Fashion-MNIST builder's source."""
    images = fashion_mnist.find_local_file(fashion_mnist.FILES[f"{split}_images"])
    labels = fashion_mnist.find_local_file(fashion_mnist.FILES[f"{split}_labels"])
    if images and labels:  # the IDX files directly: much faster than preparing Fashion-MNIST first
        return read_idx(images), read_idx(labels)
    from lcnn_jax.data.sources import load_split  # downloads when online, explains how to get it when not

    s = load_split("fashion_mnist", split, data_dir)
    return s.images[..., 0], s.labels


def _resized_item(item: np.ndarray, side: int) -> np.ndarray:
    """A 28x28 item as a side x side uint8 patch with faint pixels cleared."""
    m = resize_matrix(item.shape[0], side)
    patch = np.clip(np.round(m @ item.astype(np.float32) @ m.T), 0, 255).astype(np.uint8)
    patch[patch < INK] = 0
    return patch


def _iou_with(box: np.ndarray, placed: np.ndarray) -> np.ndarray:
    lo = np.maximum(box[:2], placed[:, :2])
    hi = np.minimum(box[2:], placed[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    union = np.prod(box[2:] - box[:2]) + np.prod(placed[:, 2:] - placed[:, :2], axis=1) - inter
    return inter / union


def make_scene(spec: SceneSpec, items: np.ndarray, item_labels: np.ndarray, rng: np.random.Generator):
    """One scene: (image canvas x canvas x 1 uint8, boxes (n, 4) float32 normalised xyxy, labels (n,) int64)."""
    size = spec.canvas
    canvas = np.zeros((size, size), np.uint8)
    placed, labels = [], []
    for _ in range(int(rng.integers(spec.min_objects, spec.max_objects + 1))):
        for _ in range(_MAX_TRIES):
            k = int(rng.integers(len(items)))
            side = int(round(math.exp(rng.uniform(math.log(spec.min_side), math.log(spec.max_side)))))
            patch = _resized_item(items[k], side)
            rows, cols = np.flatnonzero(patch.any(axis=1)), np.flatnonzero(patch.any(axis=0))
            if rows.size == 0:
                continue
            patch = patch[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]  # paste the tight crop: may touch borders
            h, w = patch.shape
            y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
            box = np.array([x, y, x + w, y + h], np.float64)
            if placed and _iou_with(box, np.asarray(placed)).max() >= spec.max_iou:
                continue
            np.maximum(canvas[y : y + h, x : x + w], patch, out=canvas[y : y + h, x : x + w])
            placed.append(box)
            labels.append(int(item_labels[k]))
            break
    if not placed:
        raise ConfigError("could not place any item: the Fashion-MNIST source has only blank images")
    boxes = (np.asarray(placed) / size).astype(np.float32)
    return canvas[..., None], boxes, np.asarray(labels, np.int64)


def _sorted_serialize(serializer, example) -> bytes:
    """A tf.train.Example serialised with its feature map in key order."""
    return serializer.get_tf_example(example).SerializeToString(deterministic=True)


class LcnnDetectionScenes(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST items pasted onto canvases: boxes and labels for detection, built offline."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Items at log-uniform sides, IoU-limited placement, ink-tight boxes."}

    def __init__(self, *, spec: SceneSpec = SceneSpec(), **kwargs):
        self.spec = spec
        # TFDS warns about every config not in BUILDER_CONFIGS; ours are named per spec and source.
        absl_logger = logging.getLogger("absl")
        level = absl_logger.level
        absl_logger.setLevel(logging.ERROR)
        try:
            super().__init__(config=spec.builder_config(), **kwargs)
        finally:
            absl_logger.setLevel(level)

    def _download_and_prepare(self, dl_manager, download_config=None):
        # upb writes proto map entries (the feature dict) in a per-process order; sorted keys make
        # the files byte-identical across runs. Scoped to this build; the records decode the same.
        serializer = example_serializer.ExampleSerializer
        unsorted = serializer.serialize_example
        serializer.serialize_example = _sorted_serialize
        try:
            return super()._download_and_prepare(dl_manager, download_config)
        finally:
            serializer.serialize_example = unsorted

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.spec.canvas
        return tfds.core.DatasetInfo(
            builder=self,
            description="Synthetic detection scenes of Fashion-MNIST items; boxes are normalised (x1, y1, x2, y2).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(size, size, 1), dtype=np.uint8),
                    "boxes": tfds.features.Tensor(shape=(None, 4), dtype=np.float32),
                    "labels": tfds.features.Tensor(shape=(None,), dtype=np.int64),
                }
            ),
            disable_shuffling=True,  # record i is scene i: the index is the image id
        )

    def _split_generators(self, dl_manager):
        data_dir = str(self.data_dir_root)
        return {
            split: self._generate_examples(split, index, *_fashion_items(split, data_dir))
            for index, split in enumerate(("train", "test"))
        }

    def _generate_examples(self, split: str, split_index: int, items: np.ndarray, item_labels: np.ndarray):
        n = self.spec.train_scenes if split == "train" else self.spec.test_scenes
        for i in range(n):
            rng = np.random.default_rng((self.spec.seed, split_index, i))
            image, boxes, labels = make_scene(self.spec, items, item_labels, rng)
            yield i, {"image": image, "boxes": boxes, "labels": labels}


@dataclasses.dataclass(frozen=True)
class DetectionSplit:
    """One detection split: decoded in RAM (images, boxes, labels) or lazy records (`source`)."""

    name: str
    num_examples: int
    num_classes: int
    channels: int
    images: np.ndarray | None = None  # (N, H, W, C) uint8 when in memory
    boxes: tuple[np.ndarray, ...] | None = None  # per image (n, 4) float32 normalised xyxy
    labels: tuple[np.ndarray, ...] | None = None  # per image (n,) int64
    source: Any = None  # random access to {'image', 'boxes', 'labels'} records when not in memory

    @property
    def in_memory(self) -> bool:
        """Whether the split was decoded into numpy arrays."""
        return self.images is not None

    def examples(self, indices) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """(image uint8 HWC, boxes (n, 4) float32, labels (n,) int64) of each index."""
        indices = [int(i) for i in indices]
        if self.in_memory:
            return [(self.images[i], self.boxes[i], self.labels[i]) for i in indices]
        return [(r["image"], r["boxes"], r["labels"]) for r in self.source.__getitems__(indices)]


def from_tfds_objects(record: dict) -> dict[str, np.ndarray]:
    """A TFDS voc/coco record as {'image', 'boxes' xyxy, 'labels'}: bbox is (ymin, xmin, ymax, xmax); crowds dropped."""
    objects = record["objects"]
    bbox = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
    labels = np.asarray(objects["label"], np.int64).reshape(-1)
    keep = ~np.asarray(objects["is_crowd"], bool).reshape(-1) if "is_crowd" in objects else np.ones(len(labels), bool)
    return {"image": np.asarray(record["image"]), "boxes": bbox[keep][:, [1, 0, 3, 2]], "labels": labels[keep]}


class _MappedSource:
    """A TFDS data source whose records go through `from_tfds_objects`."""

    def __init__(self, source):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitems__(self, indices):
        return [from_tfds_objects(r) for r in self.source.__getitems__(list(indices))]


def scenes_builder(spec: SceneSpec, data_dir: str | None) -> LcnnDetectionScenes:
    """The scenes builder of `spec`, prepared into `data_dir` on first use."""
    builder = LcnnDetectionScenes(spec=spec, data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
        builder.download_and_prepare()
    return builder


def load_detection_split(
    name: str, split: str, data_dir: str | None = None, spec: SceneSpec = SceneSpec(), max_examples: int = 0
) -> DetectionSplit:
    """Open `split` of our scenes (`name`=lcnn_detection_scenes, built from `spec`) or a prepared TFDS voc/coco."""
    family = name.split("/")[0]
    if name == NAME:
        builder = scenes_builder(spec, data_dir)
        num_classes = len(CLASS_NAMES)
    elif family in TFDS_DETECTION:
        from lcnn_jax.data.sources import builder_for  # checks prepared + array_record, explains otherwise

        builder = builder_for(name, data_dir)
        num_classes = builder.info.features["objects"]["label"].num_classes
    else:
        raise ConfigError(f"unknown detection dataset {name!r}; valid: {NAME}, voc[/2007|/2012], coco[/2017]")
    if split not in builder.info.splits:
        raise ConfigError(f"dataset {name!r} has no split {split!r}; it has {', '.join(builder.info.splits)}")
    source = builder.as_data_source(split=split)
    if name != NAME:
        source = _MappedSource(source)
    n = len(source) if not max_examples else min(max_examples, len(source))
    shape = builder.info.features["image"].shape
    if name != NAME or n * int(np.prod(shape)) > IN_MEMORY_LIMIT_BYTES:
        return DetectionSplit(split, n, num_classes, shape[-1], source=source)
    # Fixed-size scenes: decode once (per-record reads are ~100x slower than numpy indexing).
    images = np.empty((n,) + tuple(shape), np.uint8)
    boxes, labels = [], []
    for start in range(0, n, 4096):
        records = source.__getitems__(list(range(start, min(n, start + 4096))))
        images[start : start + len(records)] = np.stack([r["image"] for r in records])
        boxes += [np.asarray(r["boxes"], np.float32).reshape(-1, 4) for r in records]
        labels += [np.asarray(r["labels"], np.int64).reshape(-1) for r in records]
    return DetectionSplit(split, n, num_classes, shape[-1], images=images, boxes=tuple(boxes), labels=tuple(labels))
