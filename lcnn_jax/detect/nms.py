"""Batched per-class greedy NMS in JAX with static shapes (jittable, vmapped over the batch).

Per image: the `pre_nms_top_k` best (box, class) pairs over all classes that beat
`score_threshold` become candidates; greedy NMS then runs over them in score order, a candidate
being suppressed by an already kept one of the same class with IoU > `iou_threshold`; the first
`max_detections` kept ones are returned, padded (valid=False, class -1, zero box and score).
Same-class masking of one IoU matrix replaces the class-offset trick, whose large offsets cost
float32 precision near the threshold.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lcnn_jax.detect.boxes import iou_matrix
from lcnn_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class NmsConfig:
    """NMS settings; the defaults are the usual ones for mAP evaluation."""

    pre_nms_top_k: int = 400
    iou_threshold: float = 0.45
    score_threshold: float = 0.01
    max_detections: int = 100

    def __post_init__(self):
        if self.pre_nms_top_k < 1 or self.max_detections < 1:
            raise ConfigError("pre_nms_top_k and max_detections must be >= 1")
        if not 0 < self.iou_threshold <= 1:
            raise ConfigError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")


class Detections(NamedTuple):
    """NMS output for B images and K = max_detections slots, best first."""

    boxes: jax.Array  # (B, K, 4) normalised xyxy
    scores: jax.Array  # (B, K)
    classes: jax.Array  # (B, K) int32, -1 where not valid
    valid: jax.Array  # (B, K) bool

    @property
    def count(self) -> jax.Array:
        """Valid detections per image, (B,)."""
        return self.valid.sum(axis=-1)


def _nms_one(boxes: jax.Array, scores: jax.Array, cfg: NmsConfig) -> Detections:
    n, c = scores.shape
    k = min(cfg.pre_nms_top_k, n * c)
    top_scores, flat = jax.lax.top_k(scores.reshape(-1), k)  # flat index = box * C + class
    cand_boxes, cand_classes = boxes[flat // c], (flat % c).astype(jnp.int32)
    candidate = top_scores > cfg.score_threshold
    same_class = cand_classes[:, None] == cand_classes[None, :]
    overlaps = (iou_matrix(cand_boxes, cand_boxes) > cfg.iou_threshold) & same_class

    def visit(i, keep):
        # Only candidates before i can be kept yet, so no triangular mask is needed.
        return keep.at[i].set(candidate[i] & ~jnp.any(keep & overlaps[:, i]))

    keep = jax.lax.fori_loop(0, k, visit, jnp.zeros(k, bool))
    m = min(cfg.max_detections, k)
    best, slot = jax.lax.top_k(jnp.where(keep, top_scores, -jnp.inf), m)  # kept ones in score order
    valid = jnp.isfinite(best)
    pad = cfg.max_detections - m
    return Detections(
        boxes=jnp.pad(jnp.where(valid[:, None], cand_boxes[slot], 0.0), ((0, pad), (0, 0))),
        scores=jnp.pad(jnp.where(valid, best, 0.0), (0, pad)),
        classes=jnp.pad(jnp.where(valid, cand_classes[slot], -1), (0, pad), constant_values=-1),
        valid=jnp.pad(valid, (0, pad)),
    )


@functools.partial(jax.jit, static_argnames="cfg")
def batched_nms(boxes: jax.Array, scores: jax.Array, cfg: NmsConfig = NmsConfig()) -> Detections:
    """Per-class NMS of boxes (B, N, 4) normalised xyxy with class scores (B, N, C) (no background column)."""
    if boxes.ndim != 3 or scores.ndim != 3 or boxes.shape[:2] != scores.shape[:2] or boxes.shape[-1] != 4:
        raise ValueError(f"need boxes (B, N, 4) and scores (B, N, C), got {boxes.shape} and {scores.shape}")
    return jax.vmap(lambda b, s: _nms_one(b, s, cfg))(boxes.astype(jnp.float32), scores.astype(jnp.float32))
