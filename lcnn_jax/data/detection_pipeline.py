"""Grain batches for detection: box-consistent augmentation, resize to the model's side, padded boxes.

Training batches reuse the classification pipeline's schedule (`TrainBatches`: per-epoch seeded
shuffle, batch = pure function of (seed, epoch, batch index), `from_step` resumes mid-run) and
only replace how one batch is made. A batch is {'image': float32 (B, R, R, C) normalised,
'boxes': float32 (B, G, 4) normalised xyxy, 'labels': int32 (B, G)}, with rows past an image's
boxes padded by zero boxes and label -1. Eval batches add 'mask' (padding rows), 'image_id'
(the record index, -1 for padding) and 'size' (the original height and width, for COCO eval).
"""

from __future__ import annotations

from typing import Iterator

import grain
import numpy as np

from lcnn_jax.config import DataConfig
from lcnn_jax.data.box_augment import BoxAugment, resize_hw
from lcnn_jax.data.detection_scenes import DetectionSplit
from lcnn_jax.data.pipeline import Preprocess, TrainBatches, _iterate

MAX_BOXES = 16


def pad_boxes(boxes: list[np.ndarray], labels: list[np.ndarray], max_boxes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image boxes/labels as (B, G, 4) float32 and (B, G) int32, padded with zeros / -1 (extra boxes cut)."""
    out_boxes = np.zeros((len(boxes), max_boxes, 4), np.float32)
    out_labels = np.full((len(boxes), max_boxes), -1, np.int32)
    for i, (b, l) in enumerate(zip(boxes, labels)):
        n = min(len(l), max_boxes)
        out_boxes[i, :n] = np.asarray(b, np.float32).reshape(-1, 4)[:n]
        out_labels[i, :n] = np.asarray(l)[:n]
    return out_boxes, out_labels


class DetectionTrainBatches(TrainBatches):
    """Infinite, resumable stream of augmented detection batches (schedule inherited from TrainBatches)."""

    def __init__(self, split: DetectionSplit, cfg: DataConfig, prep: Preprocess, batch_size: int, seed: int,
                 augment: BoxAugment = BoxAugment(), max_boxes: int = MAX_BOXES):
        super().__init__(split, cfg, prep, batch_size, seed)
        self.augment, self.max_boxes = augment, max_boxes

    def _batch(self, epoch: int, index: int, indices: np.ndarray) -> dict[str, np.ndarray]:
        rng = np.random.default_rng((self.seed, epoch, index))
        out = [self.augment(im, b, l, self.prep.resolution, rng) for im, b, l in self.split.examples(indices)]
        boxes, labels = pad_boxes([o[1] for o in out], [o[2] for o in out], self.max_boxes)
        return {"image": self.prep(np.stack([o[0] for o in out])), "boxes": boxes, "labels": labels}


def detection_eval_batches(split: DetectionSplit, cfg: DataConfig, prep: Preprocess, batch_size: int,
                           max_boxes: int = MAX_BOXES) -> Iterator[dict[str, np.ndarray]]:
    """The whole split in order, resized (no augmentation), the last batch padded with mask=False rows."""
    size = prep.resolution

    def load(i: int, idx) -> dict[str, np.ndarray]:
        idx = np.asarray(idx)
        examples = split.examples(idx)
        pad = batch_size - len(idx)
        images = [np.clip(np.round(resize_hw(im, size, size)), 0, 255).astype(np.uint8) for im, _, _ in examples]
        images += [np.zeros((size, size, split.channels), np.uint8)] * pad
        boxes, labels = pad_boxes([e[1] for e in examples] + [np.zeros((0, 4))] * pad,
                                  [e[2] for e in examples] + [np.zeros(0, np.int64)] * pad, max_boxes)
        hw = [im.shape[:2] for im, _, _ in examples] + [(0, 0)] * pad
        return {
            "image": prep(np.stack(images)),
            "boxes": boxes,
            "labels": labels,
            "mask": np.arange(batch_size) < len(idx),
            "image_id": np.concatenate([idx, np.full(pad, -1)]).astype(np.int64),
            "size": np.asarray(hw, np.int32),
        }

    ds = grain.MapDataset.range(split.num_examples).batch(batch_size).map_with_index(load)
    return _iterate(ds, cfg)


def eval_ground_truth(split: DetectionSplit) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Every image's (image_id, boxes in pixels xywh, labels) for `coco_eval.coco_map`, no box limit."""
    from lcnn_jax.detect.coco_eval import to_pixel_xywh

    out = []
    for start in range(0, split.num_examples, 1024):
        ids = range(start, min(split.num_examples, start + 1024))
        for i, (image, boxes, labels) in zip(ids, split.examples(ids)):
            out.append((i, to_pixel_xywh(boxes, *image.shape[:2]), np.asarray(labels)))
    return out
