"""Batched NMS against a plain numpy greedy reference, and COCO mAP through pycocotools."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcnn_jax.detect.coco_eval import batch_detections, coco_map, to_pixel_xywh
from lcnn_jax.detect.nms import NmsConfig, batched_nms
from lcnn_jax.errors import ConfigError


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_nms(boxes, scores, cfg):
    """Greedy per-class NMS over the top-k (box, class) pairs: [(box index, class, score)] best first."""
    c = scores.shape[1]
    flat = scores.reshape(-1)
    order = [i for i in np.argsort(-flat, kind="stable")[: cfg.pre_nms_top_k] if flat[i] > cfg.score_threshold]
    kept = []
    for i in order:
        box, cls = boxes[i // c], i % c
        if all(kc != cls or _iou(box, boxes[kb]) <= cfg.iou_threshold for kb, kc, _ in kept):
            kept.append((i // c, cls, flat[i]))
        if len(kept) == cfg.max_detections:
            break
    return kept


def _random_boxes(rng, b, n):
    centre = rng.uniform(0.1, 0.9, (b, n, 2))
    half = rng.uniform(0.02, 0.2, (b, n, 2))
    return np.clip(np.concatenate([centre - half, centre + half], -1), 0, 1).astype(np.float32)


@pytest.mark.parametrize(
    "n,c,cfg",
    [
        (300, 5, NmsConfig()),  # 1500 pairs: top-k and max_detections both bind
        (200, 4, NmsConfig(pre_nms_top_k=60, max_detections=10, iou_threshold=0.3, score_threshold=0.2)),
        (12, 3, NmsConfig()),  # fewer candidates than slots: padded output
    ],
)
def test_nms_keeps_the_reference_set(n, c, cfg):
    rng = np.random.default_rng(n)
    boxes, scores = _random_boxes(rng, 3, n), rng.uniform(0, 1, (3, n, c)).astype(np.float32)
    out = batched_nms(jnp.asarray(boxes), jnp.asarray(scores), cfg)
    k = cfg.max_detections
    assert out.boxes.shape == (3, k, 4) and out.scores.shape == out.classes.shape == out.valid.shape == (3, k)
    for i in range(3):
        want = reference_nms(boxes[i], scores[i], cfg)
        valid = np.asarray(out.valid[i])
        assert int(out.count[i]) == len(want) and valid[: len(want)].all() and not valid[len(want) :].any()
        got_classes = np.asarray(out.classes[i])[: len(want)]
        np.testing.assert_array_equal(got_classes, [w[1] for w in want])
        np.testing.assert_allclose(np.asarray(out.scores[i])[: len(want)], [w[2] for w in want], rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(out.boxes[i])[: len(want)], boxes[i][[w[0] for w in want]])
        assert (np.asarray(out.classes[i])[len(want) :] == -1).all()
    if n == 300:
        assert int(out.count.max()) == 100  # the cap was reached, so the test exercises it


def test_nms_is_per_class_and_jittable_inside_other_code():
    box = np.array([0.1, 0.1, 0.5, 0.5], np.float32)
    boxes = jnp.asarray(np.stack([box, box + 0.01, box])[None])
    # Two near-duplicates of class 0 and one box of class 1 at the same place.
    scores = jnp.asarray(np.array([[[0.9, 0.0], [0.8, 0.0], [0.0, 0.7]]], np.float32))

    @jax.jit
    def detect(b, s):
        return batched_nms(b, s, NmsConfig(max_detections=5))

    out = detect(boxes, scores)
    assert int(out.count[0]) == 2
    np.testing.assert_array_equal(np.asarray(out.classes[0, :2]), [0, 1])
    np.testing.assert_allclose(np.asarray(out.scores[0, :2]), [0.9, 0.7])
    with pytest.raises(ConfigError):
        NmsConfig(iou_threshold=0.0)


def _gt():
    # Three images, two classes, small/medium/large boxes in pixels xywh.
    return [
        (0, np.array([[10, 10, 20, 20], [50, 40, 60, 70]], float), np.array([0, 1])),
        (1, np.array([[5, 5, 100, 100]], float), np.array([1])),
        (2, np.array([[30, 30, 8, 12], [70, 10, 40, 30]], float), np.array([0, 0])),
    ]


def test_perfect_predictions_give_ap_one_and_nothing_printed(capsys):
    dets = [(i, b, np.linspace(0.9, 0.8, len(l)), l) for i, b, l in _gt()]
    result = coco_map(_gt(), dets, num_classes=2)
    assert result["map"] == pytest.approx(1.0) and result["map50"] == pytest.approx(1.0)
    assert capsys.readouterr().out == ""
    coco_map(_gt(), dets, num_classes=2, verbose=True)
    assert "Average Precision" in capsys.readouterr().out


def test_empty_detections_give_zero():
    assert coco_map(_gt(), [])["map"] == 0.0
    assert coco_map(_gt(), [(0, np.zeros((0, 4)), np.zeros(0), np.zeros(0, int))])["map50"] == 0.0


def test_one_shifted_box_gives_the_known_lower_ap():
    gt = [(0, np.array([[0.0, 0.0, 100.0, 100.0]]), np.array([3]))]
    # Shifted by 23 px: IoU = 77/123 = 0.626, a match at IoU thresholds .50, .55, .60 only: AP = 3/10.
    det = [(0, np.array([[23.0, 0.0, 100.0, 100.0]]), np.array([0.9]), np.array([3]))]
    result = coco_map(gt, det)
    assert result["map50"] == pytest.approx(1.0)
    assert result["map"] == pytest.approx(0.3)
    assert math.isnan(result["map_small"])  # no small ground truth: undefined, not 0
    wrong_class = [(0, det[0][1], det[0][2], np.array([2]))]
    assert coco_map(gt, wrong_class)["map50"] == 0.0


def test_detections_for_unknown_images_are_refused():
    with pytest.raises(ValueError, match="without ground truth"):
        coco_map(_gt(), [(7, np.array([[0, 0, 1, 1.0]]), np.array([0.5]), np.array([0]))])


def test_nms_output_to_coco_detections():
    boxes = np.array([[[0.1, 0.2, 0.5, 0.6], [0, 0, 0, 0]], [[0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
    dets = batch_detections(boxes, [[0.9, 0], [0, 0]], [[2, -1], [-1, -1]], [[True, False], [False, False]],
                            image_ids=[4, -1], sizes=[[100, 200], [0, 0]])
    assert len(dets) == 1 and dets[0][0] == 4
    np.testing.assert_allclose(dets[0][1], [[20, 20, 80, 40]], rtol=1e-6)
    np.testing.assert_allclose(to_pixel_xywh([[0.5, 0.5, 1, 1]], 10, 20), [[10, 5, 10, 5]])
    np.testing.assert_array_equal(dets[0][3], [2])
