"""SSD box coding, anchor matching, 3:1 hard-negative mining and the multibox loss; inference decode.

Ground truth comes padded to a static G per image: boxes (B, G, 4) normalised xyxy, labels (B, G)
ints in [0, num_classes) for objects and -1 for padding. A matched anchor's class target is
label + 1, because column 0 of the SSD logits is the background. Labels >= num_classes are not
checked (this runs under jit) and index out of range silently.

Matching (TF ArgMaxMatcher with force_match_for_each_row; torchvision's SSD matcher): an anchor
takes its highest-IoU object when that IoU >= 0.5; then every object claims its best anchor even
below the threshold (an object overlapping no anchor at all, e.g. a zero-area box, claims none).

Mining: per image the negatives with the highest background loss are kept, 3 per positive
(`neg_pos_ratio`) and at least `min_negatives`. The default `min_negatives=0` follows torchvision
and TF's ssd_mobilenet_v1 config, so an image without objects contributes no loss at all;
TF's ssd_mobilenet_v2/ssdlite configs use 3, which trains background on empty images too.

Loss: smooth-L1 (beta 1) over positive anchors' codes plus softmax cross-entropy over positives
and mined negatives, both summed over the batch and divided by the batch's positives (at least 1).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from lcnn_jax.detect.boxes import centers_to_corners, corners_to_centers, iou_matrix
from lcnn_jax.detect.ssd_spec import SSDSpec, ssd_anchors
from lcnn_jax.errors import ConfigError

_EPS = 1e-6
# exp() of a predicted log-size is capped at 1000/16 times the anchor (torchvision's
# bbox_xform_clip), so an untrained head cannot overflow to inf boxes.
_MAX_LOG_SCALE = math.log(1000.0 / 16)


@dataclasses.dataclass(frozen=True)
class SSDLossConfig:
    """Matching threshold, mining ratio and the weights of the two loss terms."""

    iou_threshold: float = 0.5
    neg_pos_ratio: float = 3.0
    min_negatives: int = 0
    loc_weight: float = 1.0
    cls_weight: float = 1.0

    def __post_init__(self):
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ConfigError(f"iou_threshold must be in (0, 1], got {self.iou_threshold!r}")
        if self.neg_pos_ratio < 0 or self.min_negatives < 0:
            raise ConfigError(
                f"neg_pos_ratio and min_negatives must be >= 0, got {self.neg_pos_ratio!r}, {self.min_negatives!r}"
            )


def encode(boxes, anchors, variances=(0.1, 0.2)):
    """xyxy boxes to codes against (cx, cy, w, h) anchors: centre offsets / (var * anchor wh), log wh / var."""
    boxes, anchors = corners_to_centers(boxes), jnp.asarray(anchors)
    # Padding rows are all-zero boxes; the clamp keeps their (masked) codes finite.
    wh = jnp.maximum(boxes[..., 2:], _EPS)
    centre = (boxes[..., :2] - anchors[..., :2]) / (variances[0] * anchors[..., 2:])
    size = jnp.log(wh / anchors[..., 2:]) / variances[1]
    return jnp.concatenate([centre, size], axis=-1)


def decode(codes, anchors, variances=(0.1, 0.2)):
    """Inverse of `encode`: codes against (cx, cy, w, h) anchors to xyxy boxes."""
    codes, anchors = jnp.asarray(codes), jnp.asarray(anchors)
    centre = codes[..., :2] * variances[0] * anchors[..., 2:] + anchors[..., :2]
    wh = jnp.exp(jnp.minimum(codes[..., 2:] * variances[1], _MAX_LOG_SCALE)) * anchors[..., 2:]
    return centers_to_corners(jnp.concatenate([centre, wh], axis=-1))


def match(gt_boxes, gt_valid, anchors, iou_threshold: float = 0.5):
    """One image: (matched object index (N,), positive mask (N,)) for (cx, cy, w, h) anchors.

    `gt_boxes` (G, 4) xyxy and `gt_valid` (G,) bool. The index is meaningless where not positive.
    """
    n, g = anchors.shape[0], gt_boxes.shape[0]
    if g == 0:
        return jnp.zeros((n,), jnp.int32), jnp.zeros((n,), bool)
    iou = iou_matrix(centers_to_corners(anchors), gt_boxes)  # (N, G)
    iou = jnp.where(gt_valid[None, :], iou, -1.0)
    best_gt = jnp.argmax(iou, axis=1).astype(jnp.int32)
    positive = jnp.max(iou, axis=1) >= iou_threshold
    best_anchor = jnp.argmax(iou, axis=0)
    claims = gt_valid & (jnp.max(iou, axis=0) > 0.0)
    # Scatter each claiming object onto its best anchor; if two objects share one, the later wins.
    forced = jnp.full((n,), -1, jnp.int32).at[best_anchor].max(jnp.where(claims, jnp.arange(g, dtype=jnp.int32), -1))
    return jnp.where(forced >= 0, forced, best_gt), positive | (forced >= 0)


def hard_negatives(background_loss, positive, neg_pos_ratio: float = 3.0, min_negatives: int = 0):
    """One image: mask of the negatives to train on, the `ratio * positives` with the highest loss."""
    num_pos = jnp.sum(positive)
    num_neg = jnp.maximum(jnp.floor(neg_pos_ratio * num_pos).astype(jnp.int32), min_negatives)
    num_neg = jnp.minimum(num_neg, jnp.sum(~positive))
    loss = jnp.where(positive, -jnp.inf, jax.lax.stop_gradient(background_loss))
    rank = jnp.argsort(jnp.argsort(-loss))  # 0 for the hardest negative
    return (rank < num_neg) & ~positive


def _smooth_l1(x):
    ax = jnp.abs(x)
    return jnp.where(ax < 1.0, 0.5 * x * x, ax - 0.5)


def ssd_targets(spec: SSDSpec, gt_boxes, gt_labels, iou_threshold: float = 0.5):
    """Per anchor: (box code targets (B, N, 4), class targets (B, N) with 0 = background, positive mask)."""
    anchors = jnp.asarray(ssd_anchors(spec))
    gt_boxes, gt_labels = jnp.asarray(gt_boxes, jnp.float32), jnp.asarray(gt_labels, jnp.int32)
    matched, positive = jax.vmap(match, in_axes=(0, 0, None, None))(gt_boxes, gt_labels >= 0, anchors, iou_threshold)
    if gt_boxes.shape[1] == 0:
        zeros = jnp.zeros(positive.shape, jnp.int32)
        return jnp.zeros(positive.shape + (4,), jnp.float32), zeros, positive
    boxes = jnp.take_along_axis(gt_boxes, matched[..., None], axis=1)
    labels = jnp.take_along_axis(gt_labels, matched, axis=1)
    return encode(boxes, anchors, spec.variances), jnp.where(positive, labels + 1, 0), positive


def ssd_loss(spec: SSDSpec, outputs, gt_boxes, gt_labels, config: SSDLossConfig = SSDLossConfig()):
    """Multibox loss of `outputs` (an SSDOutput) against padded ground truth: (total, metrics dict).

    Metrics: 'loss', 'loc' and 'cls' (each already divided by the positives), 'num_pos', 'num_neg'.
    """
    codes, logits = outputs
    targets, classes, positive = ssd_targets(spec, gt_boxes, gt_labels, config.iou_threshold)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ce = -jnp.take_along_axis(logp, classes[..., None], axis=-1)[..., 0]
    negative = jax.vmap(hard_negatives, in_axes=(0, 0, None, None))(
        -logp[..., 0], positive, config.neg_pos_ratio, config.min_negatives
    )
    num_pos = jnp.sum(positive)
    norm = jnp.maximum(num_pos, 1).astype(jnp.float32)
    loc_per_anchor = _smooth_l1(codes.astype(jnp.float32) - targets).sum(-1)
    loc = jnp.sum(jnp.where(positive, loc_per_anchor, 0.0)) / norm
    cls = jnp.sum(jnp.where(positive | negative, ce, 0.0)) / norm
    total = config.loc_weight * loc + config.cls_weight * cls
    return total, {"loss": total, "loc": loc, "cls": cls, "num_pos": num_pos, "num_neg": jnp.sum(negative)}


def ssd_decode(spec: SSDSpec, outputs):
    """Inference: (boxes (B, N, 4) xyxy clipped to [0, 1], scores (B, N, num_classes)) per default box.

    Scores are softmax probabilities without the background column, so score column c is class c
    of the ground-truth labels. NMS is left to the caller.
    """
    codes, logits = outputs
    boxes = jnp.clip(decode(codes.astype(jnp.float32), ssd_anchors(spec), spec.variances), 0.0, 1.0)
    return boxes, jax.nn.softmax(logits.astype(jnp.float32), axis=-1)[..., 1:]
