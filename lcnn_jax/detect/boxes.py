"""Box formats and overlaps shared by the SSD and YOLO code, NMS and evaluation.

Convention everywhere in `lcnn_jax.detect`: boxes are `(x1, y1, x2, y2)` corners, normalised to
[0, 1] by the image width and height, in float32 arrays of shape `(..., 4)`. Functions take
numpy or jax arrays and return jax arrays (they are traced inside jitted losses).
"""

from __future__ import annotations

import jax.numpy as jnp

_EPS = 1e-9


def corners_to_centers(boxes):
    """`(x1, y1, x2, y2)` to `(cx, cy, w, h)`."""
    boxes = jnp.asarray(boxes)
    wh = boxes[..., 2:] - boxes[..., :2]
    return jnp.concatenate([boxes[..., :2] + wh / 2, wh], axis=-1)


def centers_to_corners(boxes):
    """`(cx, cy, w, h)` to `(x1, y1, x2, y2)`."""
    boxes = jnp.asarray(boxes)
    half = boxes[..., 2:] / 2
    return jnp.concatenate([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1)


def area(boxes):
    """Area of corner boxes; degenerate (inverted) boxes have area 0."""
    boxes = jnp.asarray(boxes)
    wh = jnp.clip(boxes[..., 2:] - boxes[..., :2], 0.0)
    return wh[..., 0] * wh[..., 1]


def intersection(a, b):
    """Pairwise intersection areas: `a` (..., N, 4) and `b` (..., M, 4) give (..., N, M)."""
    a, b = jnp.asarray(a)[..., :, None, :], jnp.asarray(b)[..., None, :, :]
    lo = jnp.maximum(a[..., :2], b[..., :2])
    hi = jnp.minimum(a[..., 2:], b[..., 2:])
    wh = jnp.clip(hi - lo, 0.0)
    return wh[..., 0] * wh[..., 1]


def iou_matrix(a, b):
    """Pairwise IoU: `a` (..., N, 4) and `b` (..., M, 4) give (..., N, M); empty boxes give 0."""
    inter = intersection(a, b)
    union = area(a)[..., :, None] + area(b)[..., None, :] - inter
    return jnp.where(union > 0, inter / jnp.maximum(union, _EPS), 0.0)
