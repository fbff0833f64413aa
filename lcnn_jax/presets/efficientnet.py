"""EfficientNet-B0 base spec and the B0..B7 compound-scaling coefficient table."""

from __future__ import annotations

from lcnn_jax.spec import BlockSpec, ConvSpec, HeadSpec, NetSpec, SESpec, StageSpec

# SE reduces the block's *input* width by 4 (int, at least 1); swish inside, sigmoid gate.
_SE = SESpec(ratio=0.25, reduce_from="input", divisor=None, activation="swish", gate="sigmoid")

# (repeats, kernel, stride, expansion, out channels), arXiv:1905.11946 Table 1.
_B0_ROWS = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
            (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))

# name: (width, depth, resolution, dropout)
COEFFICIENTS = {
    "efficientnet_b0": (1.0, 1.0, 224, 0.2),
    "efficientnet_b1": (1.0, 1.1, 240, 0.2),
    "efficientnet_b2": (1.1, 1.2, 260, 0.3),
    "efficientnet_b3": (1.2, 1.4, 300, 0.3),
    "efficientnet_b4": (1.4, 1.8, 380, 0.4),
    "efficientnet_b5": (1.6, 2.2, 456, 0.4),
    "efficientnet_b6": (1.8, 2.6, 528, 0.5),
    "efficientnet_b7": (2.0, 3.1, 600, 0.5),
}


def efficientnet_base(name: str = "efficientnet_b0") -> NetSpec:
    """The unscaled EfficientNet-B0 network (TF 'SAME' padding, TF BN constants)."""
    stages = tuple(
        StageSpec((BlockSpec("mbconv", k, s, c, repeats=n, expansion=e, se=_SE, activation="swish", padding="same"),))
        for n, k, s, e, c in _B0_ROWS
    )
    return NetSpec(
        name=name,
        stem=ConvSpec(32, kernel=3, stride=2, activation="swish", padding="same"),
        stages=stages,
        head=HeadSpec(conv=ConvSpec(1280, activation="swish", padding="same")),
    )
