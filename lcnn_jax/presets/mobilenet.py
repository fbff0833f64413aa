"""MobileNetV1 (and its full-convolution twin, Table 4), MobileNetV2 and MobileNetV3 base specs."""

from __future__ import annotations

from lcnn_jax.spec import BlockSpec, ConvSpec, HeadSpec, NetSpec, SESpec, StageSpec

# (out channels, first stride, repeats) of the 13 depthwise-separable layers, grouped by stride.
_V1_ROWS = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 2, 6), (1024, 2, 2))
# Table 5's "Shallow MobileNet": the five 14x14x512 separable layers removed.
_V1_SHALLOW_ROWS = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 2, 1), (1024, 2, 2))


def _v1(name: str, block_type: str, rows=_V1_ROWS) -> NetSpec:
    # The paper says ReLU; its reference code (TF-slim) and timm, whose checkpoints people load,
    # use ReLU6, so we do too.
    stages = tuple(
        StageSpec((BlockSpec(block_type, kernel=3, stride=s, out_channels=c, repeats=n, activation="relu6"),))
        for c, s, n in rows
    )
    return NetSpec(
        name=name,
        stem=ConvSpec(32, kernel=3, stride=2, activation="relu6"),
        stages=stages,
        head=HeadSpec(),
    )


def mobilenet_v1() -> NetSpec:
    """MobileNetV1: 13 depthwise-separable blocks (arXiv:1704.04861, Table 1)."""
    return _v1("mobilenet_v1", "separable")


def mobilenet_v1_conv() -> NetSpec:
    """MobileNetV1 with each separable block replaced by one full 3x3 conv (Table 4, 'Conv MobileNet')."""
    return _v1("mobilenet_v1_conv", "conv")


# (expansion t, out channels c, repeats n, first stride s), arXiv:1801.04381 Table 2.
_V2_ROWS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v1_shallow() -> NetSpec:
    """MobileNetV1 without its five 14x14x512 separable layers (Table 5, 'Shallow MobileNet')."""
    return _v1("mobilenet_v1_shallow", "separable", _V1_SHALLOW_ROWS)


def mobilenet_v2() -> NetSpec:
    """MobileNetV2: inverted residuals with linear bottlenecks; the 1280 head never shrinks."""
    stages = tuple(
        StageSpec((BlockSpec("mbconv", 3, s, c, repeats=n, expansion=t, activation="relu6"),))
        for t, c, n, s in _V2_ROWS
    )
    return NetSpec(
        name="mobilenet_v2",
        stem=ConvSpec(32, kernel=3, stride=2, activation="relu6"),
        stages=stages,
        head=HeadSpec(conv=ConvSpec(1280, activation="relu6", width_rule="no_shrink")),
    )


# MobileNetV3 SE: reduce the expanded width by 4, rounded to 8; ReLU inside, hard-sigmoid gate.
_V3_SE = SESpec(ratio=0.25, reduce_from="expanded", divisor=8, activation="relu", gate="hard_sigmoid")


def _v3_row(kernel, stride, expansion, out, se, act, repeats=1) -> BlockSpec:
    return BlockSpec(
        "mbconv", kernel, stride, out, repeats=repeats, expansion=expansion,
        se=_V3_SE if se else None, activation="relu" if act == "RE" else "hard_swish",
    )


def _v3(name: str, stages: tuple[tuple[BlockSpec, ...], ...], head_conv: int, pre_logits: int) -> NetSpec:
    return NetSpec(
        name=name,
        # The stem never shrinks below 16 (timm fixes it below width 0.75; the result is the same).
        stem=ConvSpec(16, kernel=3, stride=2, activation="hard_swish", width_rule="no_shrink"),
        stages=tuple(StageSpec(s) for s in stages),
        head=HeadSpec(conv=ConvSpec(head_conv, activation="hard_swish"), pre_logits=pre_logits),
    )


def mobilenet_v3_large() -> NetSpec:
    """MobileNetV3-Large (arXiv:1905.02244 Table 1); expansions are expanded/in ratios."""
    return _v3(
        "mobilenet_v3_large",
        (
            (_v3_row(3, 1, 1, 16, False, "RE"),),
            (_v3_row(3, 2, 4, 24, False, "RE"), _v3_row(3, 1, 3, 24, False, "RE")),
            (_v3_row(5, 2, 3, 40, True, "RE", repeats=3),),
            (_v3_row(3, 2, 6, 80, False, "HS"), _v3_row(3, 1, 2.5, 80, False, "HS"),
             _v3_row(3, 1, 2.3, 80, False, "HS", repeats=2)),
            (_v3_row(3, 1, 6, 112, True, "HS", repeats=2),),
            (_v3_row(5, 2, 6, 160, True, "HS", repeats=3),),
        ),
        head_conv=960,
        pre_logits=1280,
    )


def mobilenet_v3_small() -> NetSpec:
    """MobileNetV3-Small (arXiv:1905.02244 Table 2)."""
    return _v3(
        "mobilenet_v3_small",
        (
            (_v3_row(3, 2, 1, 16, True, "RE"),),
            (_v3_row(3, 2, 4.5, 24, False, "RE"), _v3_row(3, 1, 3.67, 24, False, "RE")),
            (_v3_row(5, 2, 4, 40, True, "HS"), _v3_row(5, 1, 6, 40, True, "HS", repeats=2)),
            (_v3_row(5, 1, 3, 48, True, "HS", repeats=2),),
            (_v3_row(5, 2, 6, 96, True, "HS", repeats=3),),
        ),
        head_conv=576,
        pre_logits=1024,
    )
