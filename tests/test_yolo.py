"""YOLOv8: ultralytics param counts, output layout, DFL decode, CIoU, the task-aligned assigner, the loss."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lcnn_jax.detect.yolo import YOLO_PRESETS, DetectHead, YoloV8, get_yolo_spec, make_anchors, yolo_decode
from lcnn_jax.detect.yolo_loss import YoloLossConfig, assign, ciou, yolo_loss
from lcnn_jax.errors import ConfigError


# One compiled loss for every loss test (same spec and shapes hit jit's cache).
_loss = jax.jit(yolo_loss, static_argnums=(0, 4))
_LOSS_SPEC = get_yolo_spec("yolov8n", num_classes=5, resolution=64)


def _param_count(spec, resolution=64):
    x = jax.ShapeDtypeStruct((1, resolution, resolution, 3), jnp.float32)
    variables = jax.eval_shape(lambda x: YoloV8(spec).init(jax.random.key(0), x), x)
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(variables["params"]))


def test_yolov8n_param_count_matches_ultralytics():
    # Ultralytics reports 3,157,200 including the 16 frozen weights of its DFL projection conv,
    # which is a fixed arange here, not a parameter.
    params = _param_count(get_yolo_spec("yolov8n"))
    assert abs(params - 3_157_200) / 3_157_200 < 0.01
    assert params == 3_157_200 - 16


def test_presets_and_errors():
    assert set(YOLO_PRESETS) == {"yolov8n", "yolov8s", "yolov8m"}
    m = get_yolo_spec("yolov8m")
    assert (m.channels(1024), m.channels(256), m.repeats(6), m.repeats(3)) == (576, 192, 4, 2)
    with pytest.raises(ConfigError, match="yolov8n, yolov8s, yolov8m"):
        get_yolo_spec("yolov8x")
    with pytest.raises(ConfigError, match="multiple of 32"):
        get_yolo_spec("yolov8n").scale(resolution=100)
    with pytest.raises(ConfigError, match="width"):
        get_yolo_spec("yolov8n").scale(width=0)
    scaled = get_yolo_spec("yolov8n").scale(depth=2.0, width=0.5).scale(width=0.5)
    assert scaled.width_multiple == pytest.approx(0.0625) and scaled.depth_multiple == pytest.approx(0.66)


@pytest.mark.parametrize("width", [1.0, 0.5])
def test_output_shapes(width):
    spec = get_yolo_spec("yolov8n", num_classes=10, resolution=128).scale(width=width)
    x = jax.ShapeDtypeStruct((2, 128, 128, 3), jnp.float32)
    model = YoloV8(spec)
    # Shapes only: tracing is enough, and compiling the whole net here would cost ~10 s per width.
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)
    out = jax.eval_shape(model.apply, variables, x)
    n = 16 * 16 + 8 * 8 + 4 * 4
    assert spec.num_anchors == n
    assert out.shape == (2, n, 4 * 16 + 10)
    params = variables["params"]
    assert params["0_conv"]["conv"]["kernel"].shape == (3, 3, 3, 16 if width == 1.0 else 8)
    assert params["9_sppf"]["cv2"]["conv"]["kernel"].shape[-1] == (256 if width == 1.0 else 128)
    # Head channels: box max(16, c3/4, 64) = 64, class max(c3, min(nc, 100)) = c3 (64 or 32).
    head = params["22_detect"]
    assert head["box0_0"]["conv"]["kernel"].shape[-1] == 64
    assert head["cls0_0"]["conv"]["kernel"].shape[-1] == (64 if width == 1.0 else 32)
    assert head["box2_pred"]["conv"]["kernel"].shape == (1, 1, 64, 64)


def test_head_bias_init_and_level_layout():
    spec = get_yolo_spec("yolov8n", num_classes=10, resolution=128)
    feats = [jnp.ones((1, 128 // s, 128 // s, 8)) for s in (8, 16, 32)]
    head = DetectHead(spec, impl="native")  # eager XLA convs: no im2col ops to dispatch one by one
    variables = head.init(jax.random.key(0), feats)
    out = head.apply(variables, feats)
    assert out.shape == (1, spec.num_anchors, 74)
    # Ultralytics' bias init: box logits 1, class prior 5 objects per image per level.
    params = variables["params"]
    np.testing.assert_allclose(params["box1_pred"]["bias"], 1.0)
    for level, stride in enumerate((8, 16, 32)):
        prior = math.log(5 / 10 / (128 / stride) ** 2)
        np.testing.assert_allclose(params[f"cls{level}_pred"]["bias"], prior, rtol=1e-6)


def test_anchors_order_and_strides():
    points, strides = make_anchors(64)
    assert points.shape == (64 + 16 + 4, 2)
    np.testing.assert_allclose(points[:3], [[4, 4], [12, 4], [20, 4]])  # row-major, (x, y)
    np.testing.assert_allclose(points[64], [8, 8])
    np.testing.assert_allclose(points[-1], [48, 48])
    assert list(np.unique(strides)) == [8, 16, 32] and strides[63] == 8 and strides[64] == 16
    np.testing.assert_allclose(make_anchors(64, normalized=True)[0][-1], [0.75, 0.75])


def test_decode_recovers_hand_built_box():
    spec = get_yolo_spec("yolov8n", num_classes=3, resolution=128)
    out = np.zeros((1, spec.num_anchors, spec.num_outputs), np.float32)
    # P4 (stride 16, 8x8 grid), row 2 col 3: centre (56, 40) px.
    i = 16 * 16 + 2 * 8 + 3
    for side, bins in enumerate((2, 1, 3, 4)):  # l, t, r, b in grid units
        out[0, i, side * 16 + bins] = 40.0
    out[0, i, 64 + 2] = 2.0
    boxes, scores = yolo_decode(spec, jnp.asarray(out))
    np.testing.assert_allclose(boxes[0, i], np.array([56 - 32, 40 - 16, 56 + 48, 40 + 64]) / 128, atol=1e-5)
    np.testing.assert_allclose(scores[0, i], [0.5, 0.5, 1 / (1 + math.exp(-2))], rtol=1e-6)
    # All-zero logits: uniform bins, expected distance 7.5 cells on every side.
    np.testing.assert_allclose(boxes[0, 0], np.array([4 - 60, 4 - 60, 4 + 60, 4 + 60]) / 128, atol=1e-5)
    with pytest.raises(ConfigError, match="do not match"):
        yolo_decode(spec, jnp.zeros((1, 10, spec.num_outputs)))


def _ciou_numpy(a, b):
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = a, b
    inter = max(0, min(ax2, bx2) - max(ax1, bx1)) * max(0, min(ay2, by2) - max(ay1, by1))
    wa, ha, wb, hb = ax2 - ax1, ay2 - ay1, bx2 - bx1, by2 - by1
    iou = inter / (wa * ha + wb * hb - inter)
    diag2 = (max(ax2, bx2) - min(ax1, bx1)) ** 2 + (max(ay2, by2) - min(ay1, by1)) ** 2
    rho2 = ((ax1 + ax2) / 2 - (bx1 + bx2) / 2) ** 2 + ((ay1 + ay2) / 2 - (by1 + by2) / 2) ** 2
    v = 4 / np.pi**2 * (np.arctan(wb / hb) - np.arctan(wa / ha)) ** 2
    return iou - rho2 / diag2 - v**2 / (1 - iou + v)


def test_ciou():
    box = jnp.array([[0.1, 0.2, 0.5, 0.9]])
    np.testing.assert_allclose(ciou(box, box), [1.0], atol=1e-5)
    a, b = [0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 4.0, 3.0]
    expected = _ciou_numpy(a, b)
    # IoU 1/9, centre term 3.25/25, aspect term ~2.8e-4.
    assert expected == pytest.approx(1 / 9 - 3.25 / 25 - 2.8e-4, abs=1e-5)
    np.testing.assert_allclose(ciou(jnp.array(a), jnp.array(b)), expected, rtol=1e-5)
    np.testing.assert_allclose(ciou(jnp.array(b), jnp.array(a)), expected, rtol=1e-5)
    far = ciou(jnp.array([0.0, 0, 1, 1]), jnp.array([9.0, 9, 10, 10]))
    assert -1.0 < float(far) < -0.5  # disjoint and far apart: IoU 0, centre term near 1


def _assign_numpy(scores, pboxes, anchors, gboxes, glabels, topk, alpha=0.5, beta=6.0):
    """Loop-per-gt reference of the task-aligned assigner for one image."""
    g, n = len(gboxes), len(anchors)

    pos, ov, align = np.zeros((g, n), bool), np.zeros((g, n)), np.zeros((g, n))
    for j in range(g):
        if glabels[j] < 0:
            continue
        x1, y1, x2, y2 = gboxes[j]
        inside = [k for k in range(n) if x1 < anchors[k, 0] < x2 and y1 < anchors[k, 1] < y2]
        for k in inside:
            ov[j, k] = max(0.0, _ciou_numpy(gboxes[j], pboxes[k]))  # ultralytics' overlap: CIoU >= 0
            align[j, k] = scores[k, glabels[j]] ** alpha * ov[j, k] ** beta
        for k in sorted(inside, key=lambda k: -align[j, k])[:topk]:
            pos[j, k] = True
    for k in range(n):
        if pos[:, k].sum() > 1:
            pos[:, k] = np.arange(g) == np.argmax(ov[:, k])
    fg = pos.any(0)
    idx = pos.argmax(0)
    norm = np.zeros(n)
    for j in range(g):
        if pos[j].any():
            a = np.where(pos[j], align[j], 0)
            norm = np.maximum(norm, a * ov[j][pos[j]].max() / (a.max() + 1e-9))
    tscores = np.zeros((n, scores.shape[1]))
    for k in np.nonzero(fg)[0]:
        tscores[k, glabels[idx[k]]] = norm[k]
    return fg, idx, tscores


def test_assigner_inside_topk_and_matches_reference():
    rng = np.random.default_rng(0)
    anchors, _ = make_anchors(64)
    n, nc, topk = len(anchors), 4, 3
    scores = rng.uniform(0.05, 0.95, (1, n, nc)).astype(np.float32)
    half = rng.uniform(4, 14, (1, n, 2)).astype(np.float32)
    pboxes = np.concatenate([anchors - half, anchors + half], axis=-1) + rng.normal(0, 2, (1, n, 4)).astype(np.float32)
    # Two overlapping gts (so some anchors are contested) and one padding row.
    gboxes = np.array([[[2, 2, 40, 30], [20, 10, 60, 50], [0, 0, 0, 0]]], np.float32)
    glabels = np.array([[1, 3, -1]])
    args = (jnp.asarray(scores), jnp.asarray(pboxes), jnp.asarray(anchors), jnp.asarray(gboxes), jnp.asarray(glabels))
    a = jax.jit(assign, static_argnums=5)(*args, topk)
    fg, idx = np.asarray(a.fg_mask[0]), np.asarray(a.gt_index[0])
    assert fg.sum() > 0
    for k in np.nonzero(fg)[0]:
        x1, y1, x2, y2 = gboxes[0, idx[k]]
        assert x1 < anchors[k, 0] < x2 and y1 < anchors[k, 1] < y2
        np.testing.assert_array_equal(a.target_boxes[0, k], gboxes[0, idx[k]])
    counts = np.bincount(idx[fg], minlength=3)
    assert counts[2] == 0 and counts.max() <= topk
    assert float(jnp.abs(a.target_scores[0][~fg]).sum()) == 0.0
    ref_fg, ref_idx, ref_scores = _assign_numpy(scores[0], pboxes[0], anchors, gboxes[0], glabels[0], topk)
    np.testing.assert_array_equal(fg, ref_fg)
    np.testing.assert_array_equal(idx[fg], ref_idx[ref_fg])
    np.testing.assert_allclose(a.target_scores[0], ref_scores, rtol=1e-4, atol=1e-6)


def test_empty_targets_give_zero_box_and_dfl():
    spec = _LOSS_SPEC
    out = jax.random.normal(jax.random.key(0), (2, spec.num_anchors, spec.num_outputs))
    boxes = jnp.zeros((2, 2, 4))
    labels = -jnp.ones((2, 2), jnp.int32)
    total, parts = _loss(spec, out, boxes, labels, YoloLossConfig())
    assert float(parts["box"]) == 0.0 and float(parts["dfl"]) == 0.0
    logits = np.asarray(out[..., 64:], np.float64)
    bce = np.sum(np.maximum(logits, 0) + np.log1p(np.exp(-np.abs(logits))))
    np.testing.assert_allclose(parts["cls"], 0.5 * bce, rtol=1e-4)
    np.testing.assert_allclose(total, parts["cls"], rtol=1e-6)
    grads = jax.jit(jax.grad(lambda o: yolo_loss(spec, o, boxes, labels)[0]))(out)
    assert bool(jnp.all(jnp.isfinite(grads)))


def test_loss_terms_with_targets():
    spec = _LOSS_SPEC
    out = jax.random.normal(jax.random.key(0), (2, spec.num_anchors, spec.num_outputs))
    boxes = jnp.array([[[0.1, 0.2, 0.6, 0.7], [0, 0, 0, 0]], [[0.3, 0.3, 0.9, 0.8], [0.0, 0.5, 0.4, 1.0]]])
    labels = jnp.array([[2, -1], [0, 4]])
    total, parts = _loss(spec, out, boxes, labels, YoloLossConfig())
    assert all(float(v) > 0 and math.isfinite(float(v)) for v in parts.values())
    np.testing.assert_allclose(total, sum(parts.values()), rtol=1e-6)
    # Padding rows are ignored: moving image 0's padding row elsewhere leaves its loss unchanged.
    swapped = _loss(spec, out, boxes[:, ::-1], labels[:, ::-1], YoloLossConfig())[0]
    np.testing.assert_allclose(total, swapped, rtol=1e-5)
    # Gains scale their own term only.
    _, doubled = _loss(spec, out, boxes, labels, YoloLossConfig(box_gain=15.0))
    np.testing.assert_allclose(doubled["box"], 2 * parts["box"], rtol=1e-5)
    np.testing.assert_allclose(doubled["dfl"], parts["dfl"], rtol=1e-6)


def test_loss_matches_ultralytics_golden_values():
    # Reference numbers from ultralytics 8.4.190 (TaskAlignedAssigner(topk=10, alpha=0.5, beta=6)
    # with its tiny-box enlargement off, as in v8; BCEWithLogits; BboxLoss(16); gains 7.5/0.5/1.5)
    # on exactly these inputs. The fg masks agreed and the target scores to 2e-9.
    spec = _LOSS_SPEC
    out = np.random.default_rng(3).normal(0, 1.5, (2, spec.num_anchors, spec.num_outputs)).astype(np.float32)
    boxes = np.array([[[0.1, 0.1, 0.5, 0.6], [0.3, 0.2, 0.9, 0.8]], [[0.05, 0.5, 0.4, 0.95], [0, 0, 0, 0]]], np.float32)
    labels = np.array([[1, 4], [0, -1]])
    _, parts = _loss(spec, jnp.asarray(out), jnp.asarray(boxes), jnp.asarray(labels), YoloLossConfig())
    np.testing.assert_allclose(parts["box"], 4.343269318342209, rtol=1e-5)
    np.testing.assert_allclose(parts["cls"], 375.4705810546875, rtol=1e-5)
    np.testing.assert_allclose(parts["dfl"], 3.714945673942566, rtol=1e-5)


def test_gradient_steps_reduce_loss():
    spec = get_yolo_spec("yolov8n", num_classes=3, resolution=64).scale(width=0.5)
    x = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3))
    boxes = jnp.array([[[0.1, 0.1, 0.6, 0.5], [0.5, 0.5, 0.9, 0.95]], [[0.2, 0.3, 0.8, 0.9], [0, 0, 0, 0]]])
    labels = jnp.array([[0, 2], [1, -1]])
    # Native convs: the conv formulations have their own tests, and XLA:CPU compiles the
    # backward pass of the fused ones about twice as slowly.
    model = YoloV8(spec, impl="native")
    variables = jax.jit(model.init)(jax.random.key(0), x)
    params, stats = variables["params"], variables["batch_stats"]
    opt = optax.adam(2e-3)
    opt_state = opt.init(params)

    def loss_fn(params, stats):
        out, updates = model.apply({"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"])
        return yolo_loss(spec, out, boxes, labels)[0], updates["batch_stats"]

    def step(params, stats, opt_state):
        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, stats)
        updates, opt_state = opt.update(grads, opt_state)
        return optax.apply_updates(params, updates), stats, opt_state, loss

    # Compile-time dominates this test (the steps take milliseconds); LLVM's optimisation
    # level 0 roughly halves it without changing the arithmetic being checked.
    step = jax.jit(step).lower(params, stats, opt_state).compile({"xla_backend_optimization_level": 0})
    losses = []
    for _ in range(6):
        params, stats, opt_state, loss = step(params, stats, opt_state)
        losses.append(float(loss))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses
