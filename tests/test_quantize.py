"""Int8 PTQ against a numpy int8 reference, PTQ agreement, QAT gradients and steps, model bytes, bad bits."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

# qwix 0.1.8 checks for flax's removed nnx.VariableState alias on every op it intercepts.
pytestmark = pytest.mark.filterwarnings("ignore:'VariableState' was removed:DeprecationWarning")

from lcnn_jax.compress.quantize import check_bits, fake_quant, fake_quant_kernels, model_bytes, ptq_int8, qat_model
from lcnn_jax.convs import pad_amounts
from lcnn_jax.errors import ConfigError
from lcnn_jax.layers import Conv
from lcnn_jax.net import Net, init_variables
from lcnn_jax.presets import get_spec


def numpy_int8_conv(x, w, stride, padding, groups, x_scale, w_scale, x_zero=0):
    """Quantize x (per tensor, with a zero point) and w (per output channel) to int8, convolve in int32, dequantize."""
    qx = np.clip(np.round(x / x_scale + x_zero), -128, 127).astype(np.int8)
    qw = np.clip(np.round(w / w_scale), -128, 127).astype(np.int8)
    k = w.shape[0]
    (pt, pb), (pl, pr) = pad_amounts(x.shape[1], k, stride, padding), pad_amounts(x.shape[2], k, stride, padding)
    # Padding is a real 0, i.e. the zero point: pad the zero-point-free codes with 0.
    xp = np.pad(qx.astype(np.int32) - x_zero, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    n, hp, wp, c_in = xp.shape
    ho, wo = (hp - k) // stride + 1, (wp - k) // stride + 1
    c_out = w.shape[-1]
    per_in, per_out = c_in // groups, c_out // groups
    acc = np.zeros((n, ho, wo, c_out), np.int32)
    for i in range(k):
        for j in range(k):
            patch = xp[:, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride]
            for g in range(groups):
                cols = patch[..., g * per_in : (g + 1) * per_in]
                taps = qw[i, j, :, g * per_out : (g + 1) * per_out].astype(np.int32)
                acc[..., g * per_out : (g + 1) * per_out] += np.einsum("nhwc,co->nhwo", cols, taps, dtype=np.int32)
    return acc.astype(np.float64) * x_scale * w_scale.reshape(-1)


CONV_CASES = {  # features, kernel, stride, padding, depthwise
    "depthwise3x3": (8, 3, 1, "symmetric", True),
    "depthwise5x5_s2_same": (8, 5, 2, "same", True),
    "full3x3_s2": (16, 3, 2, "symmetric", False),
    "pointwise": (16, 1, 1, "symmetric", False),
}


@pytest.mark.parametrize("asymmetric", [False, True], ids=["symmetric", "asymmetric"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_int8_conv_matches_numpy_reference(case, asymmetric):
    features, kernel, stride, padding, depthwise = CONV_CASES[case]
    rng = np.random.default_rng(0)
    c_in = 8
    w = rng.standard_normal((kernel, kernel, 1 if depthwise else c_in, features)).astype(np.float32)
    w[..., 0] *= 0.01  # channels of very different ranges: per-channel scales matter
    # Each channel's largest |w| lands on the bucket edge 127.5 * scale; a negative one is a
    # tie that the last ulp of the division breaks either way, a positive one saturates at 127.
    flat = w.reshape(-1, features)
    w *= np.sign(flat[np.abs(flat).argmax(0), np.arange(features)])
    # inputs shifted positive, as after swish: the asymmetric grid puts its zero point off centre
    calib = [rng.standard_normal((4, 9, 10, c_in)).astype(np.float32) * s + 1.0 for s in (1.0, 3.0)]
    layer = Conv(features, kernel, stride, padding, depthwise)
    q = ptq_int8(layer, {"params": {"kernel": jnp.asarray(w)}}, calib, percentile=100, asymmetric=asymmetric)

    # Weights: symmetric scales that map max|w| to 127.5 (qwix's int8 bound). Inputs: min..max
    # over all batches onto -128..127 with a zero point, or max|x| onto 127.5. float32 as in the model.
    low, high = min(b.min() for b in calib), max(b.max() for b in calib)
    if asymmetric:
        x_scale = np.float32(high - low) / np.float32(255)
        x_zero = int(np.round(-128 - np.float32(low) / x_scale))
    else:
        x_scale, x_zero = max(-low, high) / np.float32(127.5), 0
    w_scale = np.abs(w).max(axis=(0, 1, 2)) / np.float32(127.5)
    assert q.act_scales == {"": pytest.approx(x_scale, rel=1e-6)}
    ints = [leaf for leaf in jax.tree.leaves(q.variables) if leaf.dtype == jnp.int8]
    assert [leaf.shape for leaf in ints if leaf.size > 1] == [w.shape]  # the kernel is stored as int8 (+ zero point)

    x = calib[0]
    ref = numpy_int8_conv(x, w, stride, padding, c_in if depthwise else 1, x_scale, w_scale, x_zero)
    np.testing.assert_allclose(np.asarray(q(x)), ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
    # QAT's fake quant of the kernel gives the same int8 grid, so QAT trains what PTQ stores.
    codes = np.clip(np.round(w / w_scale), -128, 127)
    np.testing.assert_allclose(fake_quant_kernels({"kernel": w}, 8)["kernel"], codes * w_scale, rtol=1e-6)


@pytest.mark.parametrize("percentile", [99.0, 99.99])
def test_activation_range_is_the_largest_per_batch_percentile(percentile):
    rng = np.random.default_rng(1)
    calib = [rng.standard_normal((4, 9, 10, 8)).astype(np.float32) * s for s in (3.0, 1.0)]
    layer = Conv(8, 3)
    w = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    q = ptq_int8(layer, {"params": {"kernel": jnp.asarray(w)}}, calib, percentile=percentile)
    low = min(np.percentile(b, 100 - percentile) for b in calib)
    high = max(np.percentile(b, percentile) for b in calib)
    expected = (high - low) / 255  # asymmetric by default: the signed range onto all 256 codes
    assert q.act_scales == {"": pytest.approx(expected, rel=1e-5)}
    assert expected < (max(b.max() for b in calib) - min(b.min() for b in calib)) / 255  # the extremes are clipped
    with pytest.raises(ConfigError, match="calibration percentile must be in"):
        ptq_int8(layer, {"params": {"kernel": jnp.asarray(w)}}, calib, percentile=0)


def tiny_net(name: str, width: float, depth: float | None = None):
    """An lcnn Net at 32 px and its initial variables; BN momentum 0.8 so a few steps settle its statistics."""
    spec = get_spec(name, width=width, depth=depth, resolution=32, num_classes=10, dropout=0.0, stochastic_depth=0.0)
    model = Net(dataclasses.replace(spec, bn=dataclasses.replace(spec.bn, momentum=0.8)))
    return model, init_variables(model, 32)


@pytest.fixture(scope="module")
def net():
    """Stem, 8 depthwise-separable blocks, dense head: every kind of kernel, and it compiles fast."""
    return tiny_net("mobilenet_v1_shallow", 0.25)


def banded(seed, n):
    """Learnable 10-class images: class c has a bright band at rows 3c..3c+4 and a brightness offset."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    x = rng.normal(0.0, 0.5, (n, 32, 32, 3))
    for i, c in enumerate(y):
        x[i, 3 * c : 3 * c + 5] += 1.5
        x[i] += 0.1 * c
    return x.astype(np.float32), y


def make_step(model, tx):
    """Jitted (params, batch_stats, opt_state, x, y) -> (..., loss, grads): one train-mode update."""

    @jax.jit
    def step(params, batch_stats, opt_state, x, y):
        def loss_fn(p):
            logits, state = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                        mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), state["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss, grads

    return step


@pytest.mark.slow
def test_ptq_trained_net_agrees_with_float():
    # A randomly initialised net is no test: its logits are near-constant, or chaotic once its BN
    # statistics are set from data (1% input noise flips half its argmaxes). A few steps fix that.
    # MobileNetV3 for its SE blocks and hard-swish, the hard case for per-tensor int8 activations.
    model, variables = tiny_net("mobilenet_v3_small", 0.35, depth=0.5)  # 8 blocks, compiles faster
    tx = optax.adam(1e-2)
    step = make_step(model, tx)
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    for i in range(30):
        params, batch_stats, opt_state, _, _ = step(params, batch_stats, opt_state, *banded(100 + i, 32))
    trained = {"params": params, "batch_stats": batch_stats}

    q = ptq_int8(model, trained, [banded(1, 32)[0], banded(2, 32)[0]])
    x, y = banded(3, 128)
    ref = np.asarray(jax.jit(model.apply)(trained, x)).argmax(-1)
    out = np.asarray(q(x)).argmax(-1)
    assert np.mean(ref == y) > 0.5  # it did learn
    assert np.mean(out == ref) >= 0.85  # measured: 0.977 (float top-1 0.914, int8 0.938)
    assert np.mean(out == y) >= np.mean(ref == y) - 0.05


def test_fake_quant_levels_and_straight_through_gradient():
    x = jnp.linspace(-1.0, 2.0, 301)
    for bits in (8, 4):
        step = 2.0 / (2 ** (bits - 1) - 0.5)
        q = np.asarray(fake_quant(x, bits))
        codes = np.round(q / step)
        np.testing.assert_allclose(q, codes * step, atol=1e-6)
        assert codes.min() >= -(2 ** (bits - 1)) and codes.max() == 2 ** (bits - 1) - 1
        assert np.abs(q - np.asarray(x)).max() <= step / 2 + 1e-6
        grad = jax.grad(lambda v: jnp.sum(fake_quant(v, bits) * 3.0))(x)
        np.testing.assert_array_equal(grad, 3.0)  # straight through, the clipped top value too
    assert fake_quant(x, 32) is x


@pytest.mark.parametrize("bits", (8, 4))
def test_qat_gradients_and_sgd_steps(net, bits):
    model, variables = net
    qat = qat_model(model, bits)
    x, y = banded(bits, 16)
    tx = optax.sgd(0.05)
    step = make_step(qat, tx)
    params, batch_stats = variables["params"], variables["batch_stats"]
    opt_state = tx.init(params)
    losses = []
    for i in range(6):
        new_params, batch_stats, opt_state, loss, grads = step(params, batch_stats, opt_state, x, y)
        if i == 0:
            assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
            kernels = {p: g for p, g in jax.tree_util.tree_flatten_with_path(grads)[0] if p[-1].key == "kernel"}
            assert len(kernels) == 18  # stem, 8 x (depthwise, pointwise), classifier
            assert all(float(jnp.abs(g).max()) > 0 for g in kernels.values())
        losses.append(float(loss))
        params = new_params
    assert losses[-1] < losses[0] - 0.1, losses


def test_qat_model_options(net):
    model, _ = net
    assert qat_model(model, 32) is model
    assert (qat_model(model, 4).act_bits, qat_model(model, 8, act_bits=4).act_bits) == (8, 4)
    assert qat_model(model, 4, act_bits=32).act_bits == 32
    assert qat_model(model, 8).spec is model.spec  # a drop-in for the model in the train/eval steps


def test_model_bytes(net):
    params = {
        "conv": {"kernel": np.zeros((3, 3, 4, 8))},
        "bn": {"scale": np.zeros(8), "bias": np.zeros(8)},
        "dw": {"kernel": jax.ShapeDtypeStruct((3, 3, 1, 5), jnp.float32)},  # 45 weights: odd at 4 bits
        "classifier": {"kernel": np.zeros((8, 10)), "bias": np.zeros(10)},
    }
    floats = 4 * (8 + 8 + 10)
    # kernels packed at `bits`, plus one float32 scale per output channel and one for the input
    assert model_bytes(params, 32) == 4 * (288 + 45 + 80) + floats
    assert model_bytes(params, 8) == (288 + 4 * 9) + (45 + 4 * 6) + (80 + 4 * 11) + floats
    assert model_bytes(params, 4) == (144 + 4 * 9) + (23 + 4 * 6) + (40 + 4 * 11) + floats
    params = net[1]["params"]
    dense = model_bytes(params, 32)
    assert dense / 4.2 < model_bytes(params, 8) < dense / 3
    assert model_bytes(params, 8) / 2.2 < model_bytes(params, 4) < model_bytes(params, 8) / 1.5


def test_sparse_model_bytes_store_a_bitmap_and_the_non_zero_weights():
    kernel = np.zeros((3, 3, 4, 8), np.float32)
    kernel.reshape(-1)[::4] = 1.0  # 72 of 288 non-zero: 75% sparse
    params = {"conv": {"kernel": kernel, "bias": np.zeros(8)}}
    assert model_bytes(params, 32, sparse=True) == 4 * 72 + 288 // 8 + 4 * 8
    assert model_bytes(params, 8, sparse=True) == 72 + 288 // 8 + 4 * 9 + 4 * 8
    # a dense kernel in the sparse format costs its bitmap more than the dense format
    dense = {"conv": {"kernel": np.ones((3, 3, 4, 8), np.float32)}}
    assert model_bytes(dense, 32, sparse=True) == model_bytes(dense, 32) + 36


def test_ptq_needs_calibration_batches():
    with pytest.raises(ConfigError, match="calibration batch"):
        ptq_int8(Conv(4), {"params": {"kernel": jnp.ones((1, 1, 4, 4))}}, [])


@pytest.mark.parametrize("bits", (3, 16, 0, "8", 8.0, True))
def test_invalid_bits(net, bits):
    with pytest.raises(ConfigError, match="quantization bits"):
        model_bytes({"kernel": np.zeros((2, 2))}, bits)
    with pytest.raises(ConfigError, match="valid: 32, 8, 4"):
        check_bits(bits)
    with pytest.raises(ConfigError):
        fake_quant(jnp.ones(3), bits)
    with pytest.raises(ConfigError):
        qat_model(net[0], bits)
    with pytest.raises(ConfigError):
        qat_model(net[0], 8, act_bits=bits)
