"""Golden counts (exact) and the published tables (to the papers' rounding) for every preset."""

import pytest

from lcnn_jax.count import count_spec
from lcnn_jax.presets import PRESETS, get_spec, list_presets
from lcnn_jax.published import PUBLISHED


@pytest.mark.parametrize(
    "name,macs,params",
    [
        ("mobilenet_v1", 568_740_352, 4_231_976),
        ("mobilenet_v2", 300_774_272, 3_504_872),
        ("efficientnet_b0", 385_814_752, 5_288_548),
    ],
)
def test_golden_counts(name, macs, params):
    c = count_spec(get_spec(name))
    assert c.params == params
    assert abs(c.macs - macs) <= 0.001 * macs
    assert c.macs == macs  # we in fact match exactly


# How far a paper's printed figure may be from the exact count: papers round to 2-3 digits.
# EfficientNet B4/B5 are printed ~4% low in Table 2 (4.2B/9.9B); every port that follows the
# reference code (timm, tf.keras) computes 4.4B/10.3B, as we do.
LOOSE = {("efficientnet_b4", "macs"): 0.06, ("efficientnet_b5", "macs"): 0.05, ("mobilenet_v1", "params"): 0.065}


@pytest.mark.parametrize("pub", PUBLISHED, ids=lambda p: f"{p.model}-w{p.width}-r{p.resolution}")
def test_published_tables(pub):
    spec = get_spec(pub.model, width=pub.width, resolution=pub.resolution)
    c = count_spec(spec)
    for field in ("macs", "params"):
        ours, theirs = getattr(c, field), getattr(pub, field)
        tol = 0.0 if pub.exact else LOOSE.get((pub.model, field), 0.035)
        assert abs(ours / theirs - 1) <= tol, f"{field}: ours {ours:,} vs {pub.source} {theirs:,.0f}"


def test_every_preset_is_registered_once():
    names = list_presets()
    assert names[:6] == ["mobilenet_v1", "mobilenet_v1_conv", "mobilenet_v1_shallow", "mobilenet_v2",
                         "mobilenet_v3_large", "mobilenet_v3_small"]
    assert names[6:] == [f"efficientnet_b{i}" for i in range(8)]
    assert len(set(names)) == len(names) == len(PRESETS)


def test_mobilenet_v1_table4_depthwise_vs_full_conv():
    sep, full = count_spec(get_spec("mobilenet_v1")), count_spec(get_spec("mobilenet_v1_conv"))
    assert full.macs / sep.macs == pytest.approx(4866 / 569, rel=0.01)
    assert full.params / sep.params == pytest.approx(29.3 / 4.2, rel=0.01)


def test_num_classes_changes_only_the_classifier():
    a = count_spec(get_spec("mobilenet_v3_small"))
    b = count_spec(get_spec("mobilenet_v3_small", num_classes=10))
    assert a.params - b.params == 1024 * 990 + 990
    assert a.macs - b.macs == 1024 * 990
