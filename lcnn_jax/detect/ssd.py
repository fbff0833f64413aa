"""SSD and SSDLite detectors (Flax linen) built from an `SSDSpec` alone.

Backbone taps -> extra stride-2 layers down to 1x1 -> per-map box and class heads. The module
returns raw `SSDOutput` (box codes and logits over all default boxes); `lcnn_jax.detect.ssd_loss`
trains them and `ssd_decode` there turns them into boxes and scores.

The backbone's variables live under 'backbone' with exactly `lcnn_jax.net.Net`'s names (stem,
stage{s}_block{i}, head_conv), so an ImageNet `Net` checkpoint minus its classifier loads into it.

Differences from torchvision's ssdlite320_mobilenet_v3_large (same layer layout otherwise):
BN momentum/epsilon are the backbone spec's (0.99 / 1e-3 in Flax terms; torchvision uses
0.97 / 1e-3), initialisers are lcnn's He-normal except the predictors' N(0, 0.03) (as
torchvision's), and the box order inside a grid cell is TF's (see ssd_spec). Parameter counts
are identical.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from lcnn_jax.detect.ssd_spec import SSDSpec, Tap, get_ssd_spec, resolve_taps
from lcnn_jax.errors import ConfigError
from lcnn_jax.layers import Conv, ConvBN
from lcnn_jax.net import Block
from lcnn_jax.spec import BatchNormSpec, NetSpec, resolve_blocks


# torchvision's SSDLite predictor init. He init on the wide 1x1 predictors gives logits of
# std ~4 at the start: a class loss of ~45 per positive whose gradients wreck the backbone's first steps.
PREDICTOR_INIT_STD = 0.03


class SSDOutput(NamedTuple):
    """Raw head outputs over all N default boxes (a pytree, so jit/vmap pass it through)."""

    box_codes: jax.Array  # (B, N, 4): (dx, dy, dw, dh) relative to the default boxes
    logits: jax.Array  # (B, N, num_classes + 1); column 0 is the background


def _call_keeping_expansion(block: Block, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    """Run `block` and also return its 1x1 expansion's output (BN and activation applied).

    `Block` does not expose that activation; intercepting its 'expand' ConvBN keeps the block
    (and its parameter names) exactly `Net`'s instead of duplicating the inverted residual here.
    SE's 'expand' is a bare `Conv`, so matching on ConvBN + name finds only the expansion.
    """
    kept = []

    def keep(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, ConvBN) and context.method_name == "__call__" and context.module.name == "expand":
            kept.append(out)
        return out

    with nn.intercept_methods(keep):
        y = block(x, train)
    if len(kept) != 1:
        raise ConfigError(f"block {block.name} has no 1x1 expansion to tap")
    return y, kept[0]


class SSDBackbone(nn.Module):
    """A `Net` body that returns the tapped activations instead of logits; stops after the last tap."""

    spec: NetSpec
    taps: tuple[Tap, ...]
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> list[jax.Array]:
        s = self.spec
        common = dict(bn=s.bn, impl=self.impl)
        wanted = {(t.point, t.block): i for i, t in enumerate(self.taps)}
        found: dict[int, jax.Array] = {}
        x = ConvBN(
            s.stem.out_channels, s.stem.kernel, s.stem.stride, s.stem.padding, act=s.stem.activation,
            name="stem", **common,
        )(x, train)
        if ("stem", None) in wanted:
            found[wanted["stem", None]] = x
        for i, b in enumerate(resolve_blocks(s)):
            if len(found) == len(self.taps):
                break
            block = Block(b, s.bn, self.impl, name=f"stage{b.stage}_block{b.index}")
            if ("expand", i) in wanted:
                x, found[wanted["expand", i]] = _call_keeping_expansion(block, x, train)
            else:
                x = block(x, train)
            if ("output", i) in wanted:
                found[wanted["output", i]] = x
        if ("head", None) in wanted:
            h = s.head.conv
            found[wanted["head", None]] = ConvBN(
                h.out_channels, h.kernel, h.stride, h.padding, act=h.activation, name="head_conv", **common
            )(x, train)
        return [found[i] for i in range(len(self.taps))]


class ExtraLayer(nn.Module):
    """1x1 conv to half width, then a stride-2 3x3 conv (depthwise-separable when `depthwise`)."""

    channels: int
    depthwise: bool
    act: str = "relu6"
    padding: str = "symmetric"
    bn: BatchNormSpec = BatchNormSpec()
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        common = dict(bn=self.bn, impl=self.impl, act=self.act)
        mid = max(1, self.channels // 2)
        y = ConvBN(mid, name="reduce", **common)(x, train)
        if self.depthwise:
            y = ConvBN(mid, 3, 2, self.padding, True, name="dw", **common)(y, train)
            return ConvBN(self.channels, name="pw", **common)(y, train)
        return ConvBN(self.channels, 3, 2, self.padding, name="conv", **common)(y, train)


class PredictionHead(nn.Module):
    """One map's predictor: a k x k conv with bias, or (lite) k x k depthwise + BN + ReLU6 then 1x1 conv."""

    features: int
    kernel: int = 3
    lite: bool = False
    padding: str = "symmetric"
    bn: BatchNormSpec = BatchNormSpec()
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if self.lite:
            x = ConvBN(
                x.shape[-1], self.kernel, 1, self.padding, True, "relu6", self.bn, self.impl, name="dw"
            )(x, train)
            return Conv(self.features, use_bias=True, impl=self.impl, init_std=PREDICTOR_INIT_STD, name="conv")(x)
        return Conv(self.features, self.kernel, 1, self.padding, use_bias=True, impl=self.impl,
                    init_std=PREDICTOR_INIT_STD, name="conv")(x)


class SSD(nn.Module):
    """SSD / SSDLite exactly as `spec` describes; `impl` picks the conv formulation."""

    spec: SSDSpec
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> SSDOutput:
        s = self.spec
        if x.shape[1:3] != (s.resolution, s.resolution):
            # The default boxes are laid out for this grid; another size would silently misalign them.
            raise ConfigError(f"{s.name} expects {s.resolution}x{s.resolution} inputs, got {x.shape[1]}x{x.shape[2]}")
        bb = s.backbone
        padding = bb.stem.padding
        # A copy: the backbone's own list is what capture_intermediates records.
        features = list(SSDBackbone(bb, resolve_taps(bb, s.taps), self.impl, name="backbone")(x, train))
        y = features[-1]
        for i, c in enumerate(s.extra_widths):
            y = ExtraLayer(c, s.depthwise_extras, s.extra_activation, padding, bb.bn, self.impl, name=f"extra{i}")(
                y, train
            )
            features.append(y)
        batch, k = x.shape[0], s.num_classes + 1
        codes, logits = [], []
        for i, (f, a) in enumerate(zip(features, s.boxes_per_cell)):
            head = dict(kernel=s.head_kernel, lite=s.lite, padding=padding, bn=bb.bn, impl=self.impl)
            codes.append(PredictionHead(a * 4, **head, name=f"box_head{i}")(f, train).reshape(batch, -1, 4))
            logits.append(PredictionHead(a * k, **head, name=f"class_head{i}")(f, train).reshape(batch, -1, k))
        sizes = tuple(f.shape[1] for f in features)
        if sizes != s.feature_map_sizes:
            raise ConfigError(f"{s.name}: feature maps {sizes} differ from the default-box grids {s.feature_map_sizes}")
        return SSDOutput(jnp.concatenate(codes, axis=1), jnp.concatenate(logits, axis=1))


def build_ssd(name: str, num_classes: int = 90, *, impl: str = "auto", **overrides) -> SSD:
    """The Flax module for SSD preset `name` (see `get_ssd_spec` for the overrides)."""
    return SSD(get_ssd_spec(name, num_classes, **overrides), impl=impl)
