"""Scaling strategies: exact multiplier algebra, and matched-MACs solving with the counter."""

import math

import pytest

from lcnn_jax.errors import ConfigError
from lcnn_jax.presets import get_spec
from lcnn_jax.scaling import STRATEGIES, Coefficients, apply, derived_gamma, initial_knob, multipliers, realised_macs, solve


def test_multipliers_grow_macs_by_the_knob_analytically():
    c = Coefficients(alpha=1.2, beta=1.1, gamma=1.15, share=0.8)
    d, w, r = multipliers("fast_compound", 8.0, c)
    assert d * w**2 * r**2 == pytest.approx(8.0)  # dWr: d*w^2*r^2 = s exactly
    assert w == pytest.approx(8.0**0.4) and d == pytest.approx(8.0**0.1) and r == pytest.approx(8.0**0.05)
    d, w, r = multipliers("compound", 2.0, c)
    assert (d, w, r) == pytest.approx((1.2**2, 1.1**2, 1.15**2))
    assert multipliers("depth", 3.0) == (3.0, 1.0, 1.0)
    assert initial_knob("compound", c.flops_growth**3, c) == pytest.approx(3.0)
    with pytest.raises(ConfigError, match="unknown scaling strategy 'diagonal'"):
        multipliers("diagonal", 2.0)


def test_derived_gamma_meets_the_constraint_exactly():
    g = derived_gamma(1.2, 1.1)
    assert 1.2 * 1.1**2 * g**2 == pytest.approx(2.0, rel=1e-12)
    assert derived_gamma(1.0, 1.0, constraint=4.0) == pytest.approx(2.0)


def test_apply_rounds_resolution_to_pixels_and_keeps_the_base():
    base = get_spec("mobilenet_v2", resolution=96)
    spec = apply(base, "resolution", 1.37)
    assert spec.resolution == round(96 * 1.37) and spec.width == 1.0
    assert apply(base, "width", 1.0) == base


@pytest.mark.parametrize("model", ["efficientnet_b0", "mobilenet_v2"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_lands_within_5_percent_at_2_4_8(model, strategy):
    base = get_spec(model)
    for target in (2, 4, 8):
        scaled = solve(base, strategy, target)
        assert scaled.within_tolerance, f"{model} {strategy} x{target}: realised {scaled.ratio:.3f}"
        assert abs(scaled.ratio / target - 1) <= 0.05
        assert scaled.note == ""
        record = scaled.record()
        assert record["realised_macs"] == scaled.macs and record["target_macs"] == round(target * scaled.base_macs)


def test_impossible_targets_are_reported_not_hidden():
    # MobileNetV2 at 32 px ends in 1x1 maps; at 33 px every late map is 2x2, so MACs jump from
    # 1x to over 2x and no resolution lands near 1.5x.
    base = get_spec("mobilenet_v2", resolution=32, num_classes=10)
    scaled = solve(base, "resolution", 1.5)
    assert not scaled.within_tolerance
    assert "rounding makes 5% impossible" in scaled.note and "1.5x" in scaled.note
    nearest = min(range(32, 48), key=lambda r: abs(math.log(realised_macs(apply(base, "resolution", r / 32)) / realised_macs(base) / 1.5)))
    assert scaled.spec.resolution == nearest  # still the nearest realisable model


def test_bad_targets():
    with pytest.raises(ConfigError, match="scaling.target must be a MACs multiple > 0"):
        solve(get_spec("mobilenet_v2"), "width", 0.0)
