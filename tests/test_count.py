"""The jaxpr counter: any Flax module, no compilation, agreement with XLA's cost analysis."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from lcnn_jax.count import count, count_spec
from lcnn_jax.convs import pad_amounts
from lcnn_jax.net import Net
from lcnn_jax.presets import get_spec

# MobileNetV1 (out channels, stride) of the 13 separable layers, written out by hand.
_V1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


class HandWrittenMobileNetV1(nn.Module):
    """MobileNetV1 with plain flax layers and no lcnn spec: the counter must not care."""

    @nn.compact
    def __call__(self, x):
        def conv_bn(x, c, k, s, groups=1):
            x = nn.Conv(c, (k, k), s, padding="SAME", feature_group_count=groups, use_bias=False)(x)
            return nn.relu(nn.BatchNorm(use_running_average=True)(x))

        x = conv_bn(x, 32, 3, 2)
        for c, s in _V1:
            x = conv_bn(x, x.shape[-1], 3, s, groups=x.shape[-1])
            x = conv_bn(x, c, 1, 1)
        return nn.Dense(1000)(x.mean(axis=(1, 2)))


def test_hand_written_module_counts_like_the_preset():
    c = count(HandWrittenMobileNetV1(), jnp.zeros((1, 224, 224, 3)))
    assert (c.macs, c.params) == (568_740_352, 4_231_976)
    preset = count_spec(get_spec("mobilenet_v1"))
    assert (c.activations, c.bytes) == (preset.activations, preset.bytes)
    assert [r.op for r in c.layers].count("depthwise_conv") == 13
    # A flat module: each BN is a sibling of every conv (no shared path prefix), so BN params stay
    # unattributed, and each conv row owns exactly its kernel.
    bn_channels = 32 + sum(cin + cout for cin, (cout, _) in zip([32] + [c for c, _ in _V1[:-1]], _V1))
    assert c.unattributed_params == 2 * bn_channels
    assert c.layers[0].params == 3 * 3 * 3 * 32


def test_counts_do_not_depend_on_the_formulation_or_padding():
    spec = get_spec("efficientnet_b0", resolution=97)
    fused = count(Net(spec, impl="fused"), jax.ShapeDtypeStruct((1, 97, 97, 3), jnp.float32))
    native = count(Net(spec, impl="native"), jax.ShapeDtypeStruct((1, 97, 97, 3), jnp.float32))
    symmetric = count_spec(get_spec("efficientnet_b0", resolution=97, padding="symmetric"))
    assert fused == native
    assert (fused.macs, fused.params, fused.activations) == (symmetric.macs, symmetric.params, symmetric.activations)


def test_layer_rows_are_named_by_module_path_and_own_their_params():
    c = count_spec(get_spec("mobilenet_v2", width=0.5, resolution=64, num_classes=10))
    names = [r.name for r in c.layers]
    assert names[:4] == ["stem/conv", "stage0_block0/dw/conv", "stage0_block0/project/conv", "stage1_block0/expand/conv"]
    assert names[-1] == "classifier"
    assert len(set(names)) == len(names)
    stem = c.layers[0]
    assert stem.params == 3 * 3 * 3 * 16 + 2 * 16  # kernel + its BN's scale and bias
    assert c.unattributed_params == 0
    assert sum(r.params for r in c.layers) == c.params
    assert stem.bytes == 4 * (64 * 64 * 3 + 3 * 3 * 3 * 16 + 32 * 32 * 16)
    assert stem.intensity == pytest.approx(2 * stem.macs / stem.bytes)


def test_batch_scales_costs_but_not_params():
    one = count_spec(get_spec("mobilenet_v3_small", resolution=64))
    four = count_spec(get_spec("mobilenet_v3_small", resolution=64), batch=4)
    assert four.macs == 4 * one.macs and four.activations == 4 * one.activations
    assert four.params == one.params and four.batch == 4


class _Nested(nn.Module):
    """Convs behind jit, remat and scan: the counter descends into nested jaxprs."""

    @nn.compact
    def __call__(self, x):
        x = nn.jit(nn.Conv)(8, (3, 3), use_bias=False, name="jitted")(x)
        x = nn.remat(nn.Conv)(8, (1, 1), use_bias=False, name="remat")(x)

        class Body(nn.Module):
            @nn.compact
            def __call__(self, carry, _):
                return nn.Conv(8, (1, 1), use_bias=False)(carry), None

        scan = nn.scan(Body, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
        x, _ = scan(name="scanned")(x, None)
        return x


def test_nested_transforms_are_counted():
    c = count(_Nested(), jnp.zeros((1, 8, 8, 4)))
    hw = 8 * 8
    assert c.macs == hw * 8 * 4 * 9 + hw * 8 * 8 + 3 * hw * 8 * 8
    assert c.params == 9 * 4 * 8 + 64 + 3 * 64
    assert any(r.name.startswith("scanned") for r in c.layers)


def test_counting_never_compiles():
    compiles = []

    def listener(event, duration, **kwargs):
        if "backend_compile" in event:
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        count_spec(get_spec("efficientnet_b1", resolution=64))
        count(HandWrittenMobileNetV1(), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []


def _in_bounds_taps(size, k, s, padding):
    """Sum over output positions of kernel taps that land inside the (unpadded) input, one axis."""
    lo, hi = pad_amounts(size, k, s, padding)
    out = (size + lo + hi - k) // s + 1
    return sum(sum(0 <= o * s - lo + i < size for i in range(k)) for o in range(out))


class _Plain(nn.Module):
    """Convs and a dense layer with no bias, BN or activation: XLA counts only multiply-adds."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(16, (3, 3), 2, padding="SAME", use_bias=False)(x)
        x = nn.Conv(16, (5, 5), padding="SAME", feature_group_count=16, use_bias=False)(x)
        x = nn.Conv(24, (1, 1), use_bias=False)(x)
        return nn.Dense(10, use_bias=False)(x.reshape(x.shape[0], -1))


def test_forward_counts_match_xla_cost_analysis():
    model, x = _Plain(), jnp.ones((2, 17, 17, 3))
    variables = model.init(jax.random.key(0), x)
    xla = jax.jit(model.apply).lower(variables, x).compile().cost_analysis()
    ours = count(model, x)
    # XLA skips the taps that fall on padding; the papers' convention (ours) counts every tap.
    # Removing them from our count reproduces XLA's figure exactly.
    n = 2
    padded_taps = 0
    for layer, (k, s) in zip(ours.layers[:2], ((3, 2), (5, 1))):
        size = layer.in_shape[1]
        full = (-(-size // s) * k) ** 2
        cin_per_group = layer.kernel_shape[2]
        padded_taps += n * layer.out_shape[3] * cin_per_group * (full - _in_bounds_taps(size, k, s, "same") ** 2)
    assert xla["flops"] == ours.flops - 2 * padded_taps
    assert padded_taps > 0


def test_xla_overcounts_depthwise_kernel_gradients():
    """Documented in README: XLA reports ~100x the analytic FLOPs for a depthwise kernel gradient."""
    model, x = nn.Conv(96, (3, 3), padding="SAME", feature_group_count=96, use_bias=False), jnp.ones((8, 28, 28, 96))
    variables = model.init(jax.random.key(0), x)
    grad = jax.jit(jax.grad(lambda v: model.apply(v, x).sum()))
    xla = grad.lower(variables).compile().cost_analysis()["flops"]
    analytic = count(model, x).flops  # the kernel gradient costs as much as the forward conv
    assert xla > 10 * analytic


def test_layer_geometry_strides_and_groups():
    """LayerCount.stride/groups recover each op's conv arguments (used to time layers alone)."""
    from lcnn_jax.count import count_spec
    from lcnn_jax.presets import get_spec

    layers = {r.name: r for r in count_spec(get_spec("mobilenet_v2", width=0.5, resolution=97)).layers}
    stem, dw, pw, head = (layers[k] for k in ("stem/conv", "stage1_block0/dw/conv", "stage1_block0/project/conv", "classifier"))
    assert (stem.stride, stem.groups) == (2, 1)
    assert (dw.stride, dw.groups) == (2, dw.in_shape[-1]) and dw.groups > 1
    assert (pw.stride, pw.groups) == (1, 1)
    assert (head.stride, head.groups) == (1, 1)
