"""YOLOv8 training loss: task-aligned assigner, class BCE, CIoU box loss and distribution focal loss.

Follows ultralytics' `v8DetectionLoss` / `TaskAlignedAssigner` / `BboxLoss`: the assigner sees
detached predictions in pixels; the box and DFL terms work in grid units (pixels / stride), all
three are normalised by the sum of the soft target scores and weighted 7.5 / 0.5 / 1.5.

Ground truth is padded to a static G per image: boxes (B, G, 4) normalised xyxy, labels (B, G)
with -1 for padding. Every shape is static, so `yolo_loss` jits with the spec as a static arg.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from lcnn_jax.detect.yolo import (
    YoloSpec,
    boxes_to_distances,
    dfl_expectation,
    distances_to_boxes,
    make_anchors,
    split_outputs,
)
from lcnn_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class YoloLossConfig:
    """Assigner hyper-parameters and loss gains (ultralytics defaults)."""

    topk: int = 10
    alpha: float = 0.5  # exponent of the class score in the alignment metric
    beta: float = 6.0  # exponent of the IoU in the alignment metric
    box_gain: float = 7.5
    cls_gain: float = 0.5
    dfl_gain: float = 1.5


class Assignment(NamedTuple):
    """Per-anchor targets from the task-aligned assigner (a pytree, so it crosses jit)."""

    target_boxes: jax.Array  # (B, N, 4) corners of the assigned gt, same units as the inputs
    target_scores: jax.Array  # (B, N, nc) one-hot class times the normalised alignment; 0 off fg
    fg_mask: jax.Array  # (B, N) bool: anchor has a gt
    gt_index: jax.Array  # (B, N) int: which gt (0 where not fg)


def ciou(a, b, eps: float = 1e-7):
    """Complete IoU of corner boxes `a` and `b` elementwise over (..., 4): IoU - centre term - aspect term."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    w1, h1 = a[..., 2] - a[..., 0], jnp.maximum(a[..., 3] - a[..., 1], eps)
    w2, h2 = b[..., 2] - b[..., 0], jnp.maximum(b[..., 3] - b[..., 1], eps)
    iw = jnp.clip(jnp.minimum(a[..., 2], b[..., 2]) - jnp.maximum(a[..., 0], b[..., 0]), 0.0)
    ih = jnp.clip(jnp.minimum(a[..., 3], b[..., 3]) - jnp.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = iw * ih
    iou = inter / (w1 * h1 + w2 * h2 - inter + eps)
    # Squared diagonal of the smallest enclosing box and squared distance between centres.
    cw = jnp.maximum(a[..., 2], b[..., 2]) - jnp.minimum(a[..., 0], b[..., 0])
    ch = jnp.maximum(a[..., 3], b[..., 3]) - jnp.minimum(a[..., 1], b[..., 1])
    diag2 = cw**2 + ch**2 + eps
    dx = b[..., 0] + b[..., 2] - a[..., 0] - a[..., 2]
    dy = b[..., 1] + b[..., 3] - a[..., 1] - a[..., 3]
    rho2 = (dx**2 + dy**2) / 4
    v = (4 / jnp.pi**2) * (jnp.arctan(w2 / h2) - jnp.arctan(w1 / h1)) ** 2
    # The trade-off weight is a constant in the CIoU paper (and under no_grad in ultralytics).
    alpha = jax.lax.stop_gradient(v / (v - iou + (1 + eps)))
    return iou - (rho2 / diag2 + v * alpha)


def assign(
    pred_scores: jax.Array,
    pred_boxes: jax.Array,
    anchors: jax.Array,
    gt_boxes: jax.Array,
    gt_labels: jax.Array,
    topk: int = 10,
    alpha: float = 0.5,
    beta: float = 6.0,
    eps: float = 1e-9,
) -> Assignment:
    """Task-aligned assignment of anchors (N, 2) to padded gts, from class probabilities and boxes.

    pred_scores (B, N, nc) are probabilities, boxes are corners in the anchors' units. Per gt the
    `topk` anchors with the highest score^alpha * CIoU^beta among those whose centre lies inside
    the gt become positives; an anchor claimed by several gts keeps the one it overlaps most.
    """
    num_anchors, num_classes = pred_scores.shape[1], pred_scores.shape[2]
    if topk > num_anchors:
        raise ConfigError(f"topk must be <= the number of anchors ({num_anchors}), got {topk}")
    valid = gt_labels >= 0  # (B, G)
    labels = jnp.maximum(gt_labels, 0)
    # Anchor centre strictly inside the gt box: (B, G, N).
    ltrb = boxes_to_distances(anchors[None, None], gt_boxes[:, :, None, :])
    mask = (jnp.min(ltrb, axis=-1) > eps) & valid[..., None]

    # Ultralytics measures overlap by CIoU clamped at 0 (not plain IoU), here and in the tie-break.
    overlaps = jnp.where(mask, jnp.clip(ciou(gt_boxes[:, :, None, :], pred_boxes[:, None, :, :]), 0.0), 0.0)
    class_scores = jnp.take_along_axis(jnp.swapaxes(pred_scores, 1, 2), labels[..., None], axis=1)
    class_scores = jnp.where(mask, class_scores, 0.0)
    align = class_scores**alpha * overlaps**beta  # (B, G, N)

    # Top-k by alignment over all anchors; those outside the gt (metric 0) are masked after.
    _, idx = jax.lax.top_k(align, topk)
    in_topk = jax.vmap(jax.vmap(lambda i: jnp.zeros(num_anchors, bool).at[i].set(True)))(idx)
    pos = in_topk & mask

    # Anchors claimed by several gts keep only their highest-IoU gt.
    multi = jnp.sum(pos, axis=1, keepdims=True) > 1
    best = jax.nn.one_hot(jnp.argmax(overlaps, axis=1), gt_boxes.shape[1], axis=1, dtype=bool)
    pos = jnp.where(multi, best, pos)
    fg = jnp.any(pos, axis=1)  # (B, N)
    gt_index = jnp.argmax(pos, axis=1)

    target_boxes = jnp.take_along_axis(gt_boxes, gt_index[..., None], axis=1)
    target_labels = jnp.take_along_axis(labels, gt_index, axis=1)
    # Soft targets: each gt's alignment rescaled so its best anchor scores that gt's best IoU.
    align = jnp.where(pos, align, 0.0)
    max_align = jnp.max(align, axis=-1, keepdims=True)
    max_iou = jnp.max(jnp.where(pos, overlaps, 0.0), axis=-1, keepdims=True)
    norm = jnp.max(align * max_iou / (max_align + eps), axis=1)  # (B, N)
    target_scores = jax.nn.one_hot(target_labels, num_classes) * (fg * norm)[..., None]
    return Assignment(target_boxes, target_scores, fg, gt_index)


def _bce_with_logits(logits: jax.Array, targets: jax.Array) -> jax.Array:
    # The log-sum-exp form: finite for any logit.
    return jnp.maximum(logits, 0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def dfl_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Distribution focal loss of (..., 4, reg_max) logits for targets (..., 4) in [0, reg_max-1): mean over sides.

    Cross-entropy on the two bins around each target, weighted by linear interpolation.
    """
    left = jnp.floor(targets).astype(jnp.int32)
    w_left = left + 1 - targets
    logp = jax.nn.log_softmax(logits, axis=-1)
    lp_left = jnp.take_along_axis(logp, left[..., None], axis=-1)[..., 0]
    lp_right = jnp.take_along_axis(logp, (left + 1)[..., None], axis=-1)[..., 0]
    return -jnp.mean(lp_left * w_left + lp_right * (1 - w_left), axis=-1)


def yolo_loss(
    spec: YoloSpec,
    outputs: jax.Array,
    gt_boxes: jax.Array,
    gt_labels: jax.Array,
    config: YoloLossConfig = YoloLossConfig(),
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(total loss, {'box', 'cls', 'dfl'} gained terms) of raw outputs (B, N, 4*reg_max+nc) for padded gts.

    The total is the sum of the three gained terms for the batch (ultralytics additionally
    multiplies by the batch size; we leave that to the learning rate).
    """
    dist, logits = split_outputs(spec, outputs)
    points, strides = make_anchors(spec.resolution)
    points, strides = jnp.asarray(points), jnp.asarray(strides)[:, None]
    grid_points = points / strides
    pred_boxes = distances_to_boxes(grid_points, dfl_expectation(dist))  # grid units

    a = assign(
        jax.lax.stop_gradient(jax.nn.sigmoid(logits)),
        jax.lax.stop_gradient(pred_boxes * strides),
        points,
        jnp.asarray(gt_boxes, jnp.float32) * spec.resolution,
        jnp.asarray(gt_labels, jnp.int32),
        config.topk,
        config.alpha,
        config.beta,
    )
    score_sum = jnp.maximum(jnp.sum(a.target_scores), 1.0)
    cls = jnp.sum(_bce_with_logits(logits, a.target_scores)) / score_sum

    weight = jnp.sum(a.target_scores, axis=-1)  # (B, N), zero off the foreground
    # Background anchors get a harmless unit box so padded or degenerate gts cannot put a
    # NaN into the masked-out terms (0 * NaN would poison the sums and their gradients).
    target = jnp.where(a.fg_mask[..., None], a.target_boxes / strides, jnp.array([0.0, 0.0, 1.0, 1.0]))
    box_terms = (1.0 - ciou(pred_boxes, target)) * weight
    box = jnp.sum(jnp.where(a.fg_mask, box_terms, 0.0)) / score_sum

    target_ltrb = jnp.clip(boxes_to_distances(grid_points, target), 0.0, spec.reg_max - 1 - 0.01)
    dfl_terms = dfl_loss(dist, target_ltrb) * weight
    dfl = jnp.sum(jnp.where(a.fg_mask, dfl_terms, 0.0)) / score_sum

    parts = {"box": config.box_gain * box, "cls": config.cls_gain * cls, "dfl": config.dfl_gain * dfl}
    return parts["box"] + parts["cls"] + parts["dfl"], parts
