"""Spec rules: rounding helpers (property tests), pure scaling, stage depth, resolved blocks."""

import dataclasses
import math

import pytest
from hypothesis import given, strategies as st

from lcnn_jax.errors import ConfigError
from lcnn_jax.presets import get_spec
from lcnn_jax.presets.efficientnet import efficientnet_base
from lcnn_jax.presets.mobilenet import mobilenet_v2, mobilenet_v3_large
from lcnn_jax.spec import (
    make_divisible, resolve_blocks, round_filters, round_repeats, scale, scale_stage_depth, with_padding,
)

channels = st.integers(1, 4096)
widths = st.floats(0.05, 8.0, allow_nan=False)


@given(channels, widths)
def test_round_filters_is_a_multiple_of_8_and_within_10_percent_below(c, w):
    r = round_filters(c, w)
    assert r % 8 == 0 and r >= 8
    assert r >= 0.9 * c * w
    assert r < c * w + 8 or r == 8


@given(channels, widths, widths)
def test_round_filters_is_monotone_in_width(c, w1, w2):
    lo, hi = sorted((w1, w2))
    assert round_filters(c, lo) <= round_filters(c, hi)


@given(st.integers(1, 512))
def test_round_filters_keeps_multiples_of_8_at_width_1(k):
    assert round_filters(8 * k, 1.0) == 8 * k


def test_round_filters_reference_values():
    # tensorflow/tpu efficientnet round_filters at B-model widths.
    assert [round_filters(32, w) for w in (1.0, 1.1, 1.2, 1.4, 1.6, 1.8, 2.0)] == [32, 32, 40, 48, 48, 56, 64]
    assert [round_filters(1280, w) for w in (1.1, 1.2, 1.4, 2.0)] == [1408, 1536, 1792, 2560]
    assert round_filters(16, 0.35) == 8 and round_filters(24, 0.35) == 8  # the 10% bump kicks in at 8.4
    assert make_divisible(11.9) == 16 and make_divisible(8.8) == 8


@given(st.integers(1, 64), st.floats(0.1, 8.0, allow_nan=False))
def test_round_repeats_is_ceil(n, d):
    r = round_repeats(n, d)
    assert isinstance(r, int)
    assert n * d - 1e-9 <= r < n * d + 1
    if abs(n * d - round(n * d)) > 1e-6:
        assert r == math.ceil(n * d)


def test_round_repeats_ignores_float_noise():
    assert round_repeats(10, 1.1) == 11  # 10 * 1.1 == 11.000000000000002 in floats
    assert [round_repeats(n, 3.1) for n in (1, 2, 3, 4)] == [4, 7, 10, 13]


def test_scale_stage_depth_matches_round_repeats_for_one_row():
    for n in (1, 2, 3, 4):
        for d in (0.5, 1.1, 1.4, 3.1):
            assert scale_stage_depth((n,), d) == (round_repeats(n, d),)


def test_scale_stage_depth_grows_last_rows_first():
    assert scale_stage_depth((1, 1, 2), 1.0) == (1, 1, 2)
    assert sum(scale_stage_depth((1, 1, 2), 2.0)) == 8
    out = scale_stage_depth((1, 1, 2), 1.3)  # 4 * 1.3 -> 6 blocks
    assert sum(out) == 6 and out[0] == 1


def test_scale_is_pure_and_composes():
    base = mobilenet_v2()
    wide = scale(base, width=2.0)
    assert base == mobilenet_v2()  # input untouched
    assert wide.width == 2.0 and wide.base == base
    assert scale(wide, width=0.5) == base
    assert scale(base) == base
    deep = scale(scale(base, depth=2.0), depth=1.5)
    assert deep.depth == 3.0 and deep == scale(base, depth=3.0)


def test_scale_rejects_bad_multipliers_and_resolutions():
    base = mobilenet_v2()
    for bad in (0, -1.0, float("nan"), float("inf"), "2", True):
        with pytest.raises(ConfigError, match="width"):
            scale(base, width=bad)
        with pytest.raises(ConfigError, match="depth"):
            scale(base, depth=bad)
    for bad in (16, 31, 97.5, "224"):
        with pytest.raises(ConfigError, match="resolution must be an integer >= 32"):
            scale(base, resolution=bad)


def test_b_models_default_to_the_coefficient_table():
    b3 = get_spec("efficientnet_b3")
    assert (b3.width, b3.depth, b3.resolution, b3.dropout, b3.stochastic_depth) == (1.2, 1.4, 300, 0.3, 0.2)
    assert b3.stem.out_channels == 40 and b3.head.conv.out_channels == 1536
    assert [b.repeats for s in b3.stages for b in s.blocks] == [2, 3, 3, 5, 5, 6, 2]
    custom = get_spec("efficientnet_b3", width=1.0, depth=1.0, resolution=224)
    assert custom.stages == get_spec("efficientnet_b0").stages


def test_preset_overrides_and_errors():
    spec = get_spec("mobilenet_v1", width=0.75, resolution=160, num_classes=10, dropout=0.1, stochastic_depth=0.0)
    assert (spec.width, spec.resolution, spec.num_classes, spec.dropout) == (0.75, 160, 10, 0.1)
    assert spec.stem.out_channels == 24
    with pytest.raises(ConfigError, match="did you mean mobilenet_v2"):
        get_spec("mobilenet_v22")
    with pytest.raises(ConfigError, match="num_classes"):
        get_spec("mobilenet_v2", num_classes=0)
    with pytest.raises(ConfigError, match="dropout"):
        get_spec("mobilenet_v2", dropout=1.0)
    with pytest.raises(ConfigError, match="padding"):
        get_spec("mobilenet_v2", padding="valid")


def test_mobilenet_v2_head_never_shrinks_but_grows():
    assert get_spec("mobilenet_v2", width=0.5).head.conv.out_channels == 1280
    assert get_spec("mobilenet_v2", width=1.4).head.conv.out_channels == 1792


def test_mobilenet_v3_stem_and_pre_logits():
    assert get_spec("mobilenet_v3_large", width=0.5).stem.out_channels == 16
    assert get_spec("mobilenet_v3_large", width=1.25).stem.out_channels == 24
    assert get_spec("mobilenet_v3_large", width=0.75).head.pre_logits == 1280
    assert get_spec("mobilenet_v3_large", width=0.75).head.conv.out_channels == 720


def test_resolved_efficientnet_blocks():
    blocks = resolve_blocks(get_spec("efficientnet_b0"))
    assert len(blocks) == 16
    first = blocks[0]
    assert (first.in_channels, first.expanded_channels, first.se_channels, first.residual) == (32, 32, 8, False)
    b = blocks[1]  # 16 -> 24, expansion 6, SE from the block input: int(16 * 0.25)
    assert (b.in_channels, b.expanded_channels, b.se_channels, b.stride) == (16, 96, 4, 2)
    # stochastic depth 0.2 * i / N on residual blocks only
    for i, blk in enumerate(blocks):
        assert blk.drop_path == pytest.approx(0.2 * i / 16 if blk.residual else 0.0)


def test_resolved_mobilenet_v3_blocks_use_expanded_se_and_ratios():
    blocks = resolve_blocks(get_spec("mobilenet_v3_large"))
    expanded = [b.expanded_channels for b in blocks]
    assert expanded == [16, 64, 72, 72, 120, 120, 240, 200, 184, 184, 480, 672, 672, 960, 960]
    se = [b.se_channels for b in blocks if b.se is not None]
    assert se == [24, 32, 32, 120, 168, 168, 240, 240]
    assert blocks[0].residual  # 16 -> 16, stride 1


def test_resolved_mobilenet_v2_expansion_and_residuals():
    blocks = resolve_blocks(get_spec("mobilenet_v2"))
    assert [b.expanded_channels for b in blocks[:4]] == [32, 96, 144, 144]
    assert [b.residual for b in blocks[:4]] == [False, False, True, False]


def test_with_padding_changes_every_spatial_conv_and_the_base():
    spec = with_padding(get_spec("efficientnet_b2"), "symmetric")
    assert spec.stem.padding == "symmetric"
    assert {b.padding for s in spec.stages for b in s.blocks} == {"symmetric"}
    assert {b.padding for s in spec.base.stages for b in s.blocks} == {"symmetric"}
    assert scale(spec, width=1.0).stem.padding == "symmetric"


def test_specs_are_frozen_and_hashable():
    spec = efficientnet_base()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.resolution = 10
    assert hash(spec) == hash(efficientnet_base())
    assert mobilenet_v3_large() != efficientnet_base()
