"""COCO box mAP through pycocotools, from in-memory ground truth and detections (no JSON files).

Boxes here are in pixels as COCO's `(x, y, width, height)`; `to_pixel_xywh` converts our
normalised corners. Category ids are label + 1 and annotation ids start at 1, because
pycocotools uses id 0 as its "unmatched" marker. pycocotools prints as it goes; that is
swallowed unless `verbose`.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Iterable

import numpy as np

# pycocotools' summary rows (COCOeval.stats indices) under our names.
METRICS = {"map": 0, "map50": 1, "map75": 2, "map_small": 3, "map_medium": 4, "map_large": 5, "ar100": 8}


def to_pixel_xywh(boxes, height: int, width: int) -> np.ndarray:
    """Normalised `(x1, y1, x2, y2)` (n, 4) to pixel `(x, y, w, h)` of a height x width image."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4) * np.array([width, height, width, height])
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def batch_detections(boxes, scores, classes, valid, image_ids, sizes) -> list[tuple]:
    """NMS output (B, K, ...) in normalised boxes as (image_id, pixel xywh, scores, labels) per image, no padding."""
    boxes, scores, classes, valid = map(np.asarray, (boxes, scores, classes, valid))
    out = []
    for i, image_id in enumerate(np.asarray(image_ids)):
        if image_id < 0:
            continue
        keep = valid[i].astype(bool)
        h, w = np.asarray(sizes)[i]
        out.append((int(image_id), to_pixel_xywh(boxes[i][keep], h, w), scores[i][keep], classes[i][keep]))
    return out


def _gt_dataset(ground_truth, categories) -> dict:
    images, annotations = [], []
    for image_id, boxes, labels in ground_truth:
        images.append({"id": int(image_id)})
        for box, label in zip(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(labels).reshape(-1)):
            annotations.append({
                "id": len(annotations) + 1, "image_id": int(image_id), "category_id": int(label) + 1,
                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0,
            })
    return {"images": images, "annotations": annotations, "categories": [{"id": c + 1} for c in categories]}


def coco_map(ground_truth: Iterable, detections: Iterable, num_classes: int | None = None,
             verbose: bool = False) -> dict[str, float]:
    """COCO AP@[.5:.95] ('map'), AP@.5 ('map50'), AP@.75, per-size AP and AR@100; nan where there is no ground truth.

    ground_truth: (image_id, boxes pixel xywh (n, 4), labels (n,)) per image, every evaluated image once;
    detections: (image_id, boxes pixel xywh (k, 4), scores (k,), labels (k,)) per image.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ground_truth = list(ground_truth)
    results = []
    for image_id, boxes, scores, labels in detections:
        for box, score, label in zip(np.asarray(boxes, np.float64).reshape(-1, 4), np.ravel(scores), np.ravel(labels)):
            results.append({"image_id": int(image_id), "category_id": int(label) + 1,
                            "bbox": [float(v) for v in box], "score": float(score)})
    if not results:  # loadRes cannot take an empty list; nothing detected is AP 0
        return {name: 0.0 for name in METRICS}
    known = {int(g[0]) for g in ground_truth}
    unknown = sorted({r["image_id"] for r in results} - known)
    if unknown:
        raise ValueError(f"detections for image ids without ground truth entries: {unknown[:5]}")
    if num_classes is None:
        labels = [int(l) for g in ground_truth for l in np.ravel(g[2])] + [r["category_id"] - 1 for r in results]
        num_classes = 1 + max(labels)
    quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with quiet:
        gt = COCO()
        gt.dataset = _gt_dataset(ground_truth, range(num_classes))
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    return {name: (float(stats[i]) if stats[i] >= 0 else math.nan) for name, i in METRICS.items()}
