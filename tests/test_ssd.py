"""SSD/SSDLite: default boxes, box coding, matching, mining, loss, model shapes and parameter counts."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcnn_jax.count import count
from lcnn_jax.detect.anchors import AnchorSpec, anchor_boxes
from lcnn_jax.detect.ssd import SSD, SSDOutput
from lcnn_jax.detect.ssd_loss import decode, encode, hard_negatives, match, ssd_decode, ssd_loss
from lcnn_jax.detect.ssd_spec import get_ssd_spec, list_ssd_presets, resolve_taps
from lcnn_jax.errors import ConfigError
from lcnn_jax.net import Net
from lcnn_jax.spec import resolve_blocks


def test_tf_default_boxes_number_1917_at_300_and_sit_where_tf_puts_them():
    boxes = anchor_boxes(AnchorSpec(), (19, 10, 5, 3, 2, 1))
    assert boxes.shape == (1917, 4)
    assert get_ssd_spec("ssdlite_mobilenet_v2").num_anchors == 1917
    assert get_ssd_spec("ssd_mobilenet_v1").feature_map_sizes == (19, 10, 5, 3, 2, 1)
    c = 0.5 / 19
    s2 = math.sqrt(2.0)
    # First cell of the first map: TF's reduced set (0.1, 1), (0.2, 2), (0.2, 1/2).
    np.testing.assert_allclose(boxes[:3], [[c, c, 0.1, 0.1], [c, c, 0.2 * s2, 0.2 / s2], [c, c, 0.2 / s2, 0.2 * s2]],
                               rtol=1e-6)
    # Second cell moves along x (row-major grid, boxes of a cell contiguous).
    np.testing.assert_allclose(boxes[3, :2], [3 * c, c], rtol=1e-6)
    # The 1x1 map: scale 0.95 at five ratios, then the interpolated box sqrt(0.95 * 1.0).
    np.testing.assert_allclose(boxes[-6, 2:], [0.95, 0.95], rtol=1e-6)
    np.testing.assert_allclose(boxes[-1], [0.5, 0.5, math.sqrt(0.95), math.sqrt(0.95)], rtol=1e-6)
    # Second map: scale 0.35 and interpolated sqrt(0.35 * 0.5).
    second = boxes[19 * 19 * 3 : 19 * 19 * 3 + 6]
    np.testing.assert_allclose(second[0, 2:], [0.35, 0.35], rtol=1e-6)
    np.testing.assert_allclose(second[5, 2:], [math.sqrt(0.35 * 0.5)] * 2, rtol=1e-6)
    assert anchor_boxes(AnchorSpec(), (19, 10, 5, 3, 2, 1)) is boxes  # cached


def test_torchvision_layout_for_v3_has_six_boxes_everywhere_clipped():
    spec = get_ssd_spec("ssdlite_mobilenet_v3_large")
    assert spec.feature_map_sizes == (20, 10, 5, 3, 2, 1) and spec.boxes_per_cell == (6,) * 6
    assert spec.num_anchors == 6 * (400 + 100 + 25 + 9 + 4 + 1) == 3234
    boxes = anchor_boxes(spec.anchors, spec.feature_map_sizes)
    assert boxes.min() >= 0.0 and boxes.max() == 1.0  # the 1x1 map's ratio-3 box is clipped


def test_encode_decode_round_trip_and_known_code():
    rng = np.random.default_rng(0)
    lo = rng.uniform(0, 0.6, (50, 2))
    boxes = np.concatenate([lo, lo + rng.uniform(0.02, 0.4, (50, 2))], -1).astype(np.float32)
    anchors = anchor_boxes(AnchorSpec(), (19, 10, 5, 3, 2, 1))[rng.integers(0, 1917, 50)]
    np.testing.assert_allclose(jax.jit(lambda b, a: decode(encode(b, a), a))(boxes, anchors), boxes, atol=1e-5)
    code = jax.jit(encode)(np.array([[0.32, 0.4, 0.72, 0.6]]), np.array([[0.5, 0.5, 0.2, 0.2]]))
    # centre x off by 0.02 = 1.0 * (0.1 * 0.2); width doubled = log 2 / 0.2.
    np.testing.assert_allclose(code, [[1.0, 0.0, math.log(2) / 0.2, 0.0]], atol=1e-5)


def test_matcher_threshold_forcing_and_padding():
    anchors = jnp.array([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.75, 0.25, 0.5, 0.5]])
    gt = jnp.array([
        [0.0, 0.0, 0.1, 0.1],  # IoU 0.04 with anchor 0, its best: forced below threshold
        [0.5, 0.5, 1.0, 1.0],  # IoU 1 with anchor 1
        [0.5, 0.0, 1.0, 0.5],  # padding with a perfect match to anchor 3: must be ignored
    ])
    jit_match = jax.jit(match)
    matched, positive = jit_match(gt, jnp.array([True, True, False]), anchors)
    assert positive.tolist() == [True, True, False, False]
    assert matched[:2].tolist() == [0, 1]
    # Without forcing the small box would be unmatched: nothing else reaches 0.5.
    matched, positive = jit_match(gt[:1], jnp.array([True]), anchors)
    assert positive.tolist() == [True, False, False, False]


def test_hard_negatives_keep_three_per_positive_and_the_hardest():
    rng = np.random.default_rng(1)
    loss = jnp.asarray(rng.uniform(size=(2, 40)), jnp.float32)
    positive = jnp.zeros((2, 40), bool).at[0, :4].set(True).at[1, 10:22].set(True)
    neg = jax.jit(jax.vmap(hard_negatives))(loss, positive)
    assert neg.sum(axis=1).tolist() == [12, 28]  # image 1 has only 28 negatives for 36 wanted
    assert not bool((neg & positive).any())
    hardest = np.sort(np.asarray(loss[0, 4:]))[-12:]
    np.testing.assert_allclose(np.sort(np.asarray(loss[0])[np.asarray(neg[0])]), hardest)


def _outputs(spec, batch, seed=0):
    rng = np.random.default_rng(seed)
    n, k = spec.num_anchors, spec.num_classes + 1
    return SSDOutput(jnp.asarray(rng.normal(size=(batch, n, 4)), jnp.float32),
                     jnp.asarray(rng.normal(size=(batch, n, k)), jnp.float32))


def test_loss_mines_three_negatives_per_positive_and_is_zero_without_objects():
    spec = get_ssd_spec("ssdlite_mobilenet_v2", 3)
    out = _outputs(spec, 2)
    value_and_grad = jax.jit(jax.value_and_grad(lambda o, b, lab: ssd_loss(spec, o, b, lab), has_aux=True))
    boxes = jnp.array([[[0.1, 0.1, 0.5, 0.6], [0.6, 0.6, 0.65, 0.64], [0, 0, 0, 0]],
                       [[0.2, 0.2, 0.9, 0.8], [0, 0, 0, 0], [0, 0, 0, 0]]])
    (total, m), grads = value_and_grad(out, boxes, jnp.array([[0, 2, -1], [1, -1, -1]]))
    assert int(m["num_pos"]) >= 3 and int(m["num_neg"]) == 3 * int(m["num_pos"])
    assert float(m["loc"]) > 0 and float(m["cls"]) > 0
    np.testing.assert_allclose(float(total), float(m["loc"] + m["cls"]), rtol=1e-6)
    # Gradients reach exactly the positives and mined negatives.
    touched = int(jnp.sum(jnp.any(grads.logits != 0, axis=-1)))
    assert touched == int(m["num_pos"]) + int(m["num_neg"])

    (total, m), grads = value_and_grad(out, jnp.zeros((2, 3, 4)), -jnp.ones((2, 3), jnp.int32))
    assert [float(m[k]) for k in ("loss", "loc", "cls", "num_pos", "num_neg")] == [0.0] * 5
    assert all(bool(jnp.all(g == 0)) for g in jax.tree_util.tree_leaves(grads))
    # Ground truth padded to zero slots: no matching at all, still a zero loss.
    small = get_ssd_spec("ssd_mobilenet_v1", 3, resolution=32)
    total, _ = jax.jit(lambda o: ssd_loss(small, o, jnp.zeros((2, 0, 4)), jnp.zeros((2, 0), jnp.int32)))(
        _outputs(small, 2))
    assert float(total) == 0.0


def test_decode_drops_background_and_perfect_codes_give_the_boxes():
    spec = get_ssd_spec("ssd_mobilenet_v1", 4, resolution=64)
    anchors = anchor_boxes(spec.anchors, spec.feature_map_sizes)
    target = jnp.broadcast_to(jnp.array([0.2, 0.3, 0.6, 0.7]), (1, spec.num_anchors, 4))
    logits = jnp.zeros((1, spec.num_anchors, 5)).at[..., 3].set(5.0)
    boxes, scores = jax.jit(lambda t, lg: ssd_decode(spec, SSDOutput(encode(t, anchors, spec.variances), lg)))(
        target, logits)
    np.testing.assert_allclose(boxes, target, atol=1e-5)
    assert scores.shape == (1, spec.num_anchors, 4)
    np.testing.assert_allclose(scores[0, 0], np.exp([0, 0, 5, 0]) / (4 + math.exp(5)), rtol=1e-5)


def test_taps_follow_the_papers():
    taps = {n: [(t.point, t.channels) for t in resolve_taps(s.backbone, s.taps)]
            for n in list_ssd_presets() for s in [get_ssd_spec(n)]}
    assert taps["ssd_mobilenet_v1"] == [("output", 512), ("output", 1024)]  # conv11, conv13
    assert taps["ssd_mobilenet_v2"] == [("expand", 576), ("head", 1280)]
    assert taps["ssdlite_mobilenet_v3_large"] == [("expand", 672), ("head", 480)]  # reduced tail
    half = get_ssd_spec("ssdlite_mobilenet_v2", width=0.5)
    assert [t.channels for t in resolve_taps(half.backbone, half.taps)] == [288, 1280]
    assert half.extra_widths == (256, 128, 128, 64)
    assert half.scale(width=2.0).extra_widths == (512, 256, 256, 128)
    with pytest.raises(ConfigError, match="valid: ssd_mobilenet_v1, ssd_mobilenet_v2"):
        get_ssd_spec("ssd_mobilenet_v4")


def test_param_and_mac_counts_match_torchvision_and_tf():
    def counts(name, num_classes):
        spec = get_ssd_spec(name, num_classes)
        c = count(SSD(spec), jax.ShapeDtypeStruct((1, spec.resolution, spec.resolution, 3), jnp.float32), train=False)
        return c.params, c.macs

    # torchvision's num_classes=91 includes the background: our 90 foreground classes.
    assert counts("ssdlite_mobilenet_v3_large", 90)[0] == 3_440_060
    assert abs(counts("ssdlite_mobilenet_v3_large", 91)[0] / 3_440_060 - 1) < 0.02
    # TF OD API COCO models as the OpenVINO model zoo lists them (BN folded into conv biases,
    # GFLOPs = 2 x MACs): v1 6.807M / 2.494, v2 16.818M / 3.775, SSDLite v2 4.475M / 1.525.
    for name, mparams, gflops in (("ssd_mobilenet_v1", 6.807, 2.494), ("ssd_mobilenet_v2", 16.818, 3.775),
                                  ("ssdlite_mobilenet_v2", 4.475, 1.525)):
        params, macs = counts(name, 90)
        assert abs(params / (mparams * 1e6) - 1) < 0.01, (name, params)
        assert abs(2 * macs / (gflops * 1e9) - 1) < 0.02, (name, macs)


@pytest.mark.parametrize("name", ["ssd_mobilenet_v1", "ssd_mobilenet_v2", "ssdlite_mobilenet_v2",
                                  "ssdlite_mobilenet_v3_large"])
def test_output_shapes_full_and_half_width(name):
    full = get_ssd_spec(name, 3, resolution=128)
    for spec in (full, full.scale(width=0.5)):
        # Shapes only: one abstract trace of init (which runs the forward pass), nothing compiled.
        x = jax.ShapeDtypeStruct((2, 128, 128, 3), jnp.float32)
        out, _ = jax.eval_shape(lambda x: SSD(spec).init_with_output(jax.random.key(0), x), x)
        assert spec.feature_map_sizes == (8, 4, 2, 1, 1, 1)
        assert out.box_codes.shape == (2, spec.num_anchors, 4) and out.logits.shape == (2, spec.num_anchors, 4)


def _random_variables(shapes, seed=0):
    """Variables of these shapes drawn on the host: no init compile (BN variances kept positive)."""
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if getattr(path[-1], "key", None) == "var":
            return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
        return jnp.asarray(rng.normal(0.0, 0.2, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def test_forward_taps_the_expansion_with_net_names_and_decodes():
    # V3: its tapped block has SE, whose bare 'expand' Conv must not be mistaken for the expansion.
    spec = get_ssd_spec("ssdlite_mobilenet_v3_large", 3, resolution=64, width=0.35, depth=0.5)
    model, x = SSD(spec), jax.random.uniform(jax.random.key(0), (2, 64, 64, 3))
    shapes = jax.eval_shape(lambda x: model.init(jax.random.key(1), x), x)
    net_shapes = jax.eval_shape(lambda x: Net(spec.backbone).init(jax.random.key(1), x), x)
    net_params = {k: v for k, v in net_shapes["params"].items() if k not in ("classifier", "pre_logits")}
    assert shapes["params"]["backbone"] == net_params  # an ImageNet Net checkpoint loads as is
    assert shapes["batch_stats"]["backbone"] == net_shapes["batch_stats"]

    @jax.jit
    def forward(variables, x):
        out, state = model.apply(variables, x, capture_intermediates=True)
        return out, state["intermediates"], ssd_decode(spec, out)

    out, inter, (boxes, scores) = forward(_random_variables(shapes), x)
    tap = resolve_taps(spec.backbone, spec.taps)[0]
    block = [f"stage{b.stage}_block{b.index}" for b in resolve_blocks(spec.backbone)][tap.block]
    got = inter["backbone"]["__call__"][0]
    assert [g.shape for g in got] == [(2, 4, 4, tap.channels), (2, 2, 2, spec.backbone.head.conv.out_channels)]
    np.testing.assert_array_equal(got[0], inter["backbone"][block]["expand"]["__call__"][0])
    np.testing.assert_array_equal(got[1], inter["backbone"]["head_conv"]["__call__"][0])
    assert bool(jnp.isfinite(out.logits).all()) and float(jnp.std(out.logits)) > 0
    assert boxes.shape == (2, spec.num_anchors, 4) and scores.shape == (2, spec.num_anchors, 3)
    assert float(boxes.min()) >= 0 and float(boxes.max()) <= 1 and bool((scores.sum(-1) < 1).all())
    with pytest.raises(ConfigError, match="expects 64x64"):
        jax.eval_shape(lambda x: model.init(jax.random.key(1), x), jax.ShapeDtypeStruct((1, 96, 96, 3), jnp.float32))


def test_predictors_start_small_so_the_first_losses_are_near_chance():
    # He init on the wide 1x1 predictors gave logits of std ~4 and a first class loss ~45 per positive.
    spec = get_ssd_spec("ssdlite_mobilenet_v2", 10, resolution=64, width=0.35, depth=0.5)
    x = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3))
    out, variables = jax.jit(lambda x: SSD(spec).init_with_output(jax.random.key(1), x))(x)
    heads = {k: v["conv"]["kernel"] for k, v in variables["params"].items() if k.startswith(("box_head", "class_head"))}
    assert len(heads) == 2 * len(spec.feature_map_sizes)
    assert all(abs(float(jnp.std(k)) - 0.03) < 0.01 for k in heads.values())
    assert float(jnp.std(out.logits)) < 1.0 and float(jnp.std(out.box_codes)) < 1.0
