"""The Flax (linen) classification network built from a `NetSpec` alone.

Variables are the usual explicit pytrees: ``{'params': ..., 'batch_stats': ...}``. In training
(`train=True`) BN uses batch statistics and updates `batch_stats` (pass ``mutable=['batch_stats']``);
in eval it uses the running averages. Dropout and stochastic depth draw from the 'dropout' rng.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from lcnn_jax.layers import Conv, ConvBN, DropPath, SqueezeExcite, activation, host_variance_scaling
from lcnn_jax.spec import BatchNormSpec, NetSpec, ResolvedBlock, resolve_blocks


class Block(nn.Module):
    """One resolved block: MobileNetV1 separable, MBConv/inverted residual, or a full conv."""

    block: ResolvedBlock
    bn: BatchNormSpec
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        b = self.block
        common = dict(bn=self.bn, impl=self.impl)
        if b.type == "conv":
            return ConvBN(b.out_channels, b.kernel, b.stride, b.padding, act=b.activation, name="conv", **common)(
                x, train
            )
        if b.type == "separable":
            y = ConvBN(b.in_channels, b.kernel, b.stride, b.padding, True, b.activation, name="dw", **common)(x, train)
            return ConvBN(b.out_channels, act=b.activation, name="pw", **common)(y, train)
        # mbconv: [expand] -> depthwise -> [SE] -> linear projection (+ residual)
        y = x
        if b.expanded_channels != b.in_channels:
            y = ConvBN(b.expanded_channels, act=b.activation, name="expand", **common)(y, train)
        y = ConvBN(b.expanded_channels, b.kernel, b.stride, b.padding, True, b.activation, name="dw", **common)(
            y, train
        )
        if b.se is not None:
            y = SqueezeExcite(b.se_channels, b.se.activation, b.se.gate, self.impl, name="se")(y)
        y = ConvBN(b.out_channels, act="linear", name="project", **common)(y, train)
        if b.residual:
            y = DropPath(b.drop_path, name="drop_path")(y, train) + x
        return y


class Net(nn.Module):
    """Stem -> blocks -> head, exactly as `spec` describes; `impl` picks the conv formulation."""

    spec: NetSpec
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        s = self.spec
        common = dict(bn=s.bn, impl=self.impl)
        x = ConvBN(
            s.stem.out_channels, s.stem.kernel, s.stem.stride, s.stem.padding, act=s.stem.activation,
            name="stem", **common,
        )(x, train)
        for b in resolve_blocks(s):
            x = Block(b, s.bn, self.impl, name=f"stage{b.stage}_block{b.index}")(x, train)
        if s.head.conv is not None:
            h = s.head.conv
            x = ConvBN(h.out_channels, h.kernel, h.stride, h.padding, act=h.activation, name="head_conv", **common)(
                x, train
            )
        x = jnp.mean(x, axis=(1, 2), keepdims=True)
        if s.head.pre_logits is not None:
            x = Conv(s.head.pre_logits, use_bias=True, impl=self.impl, name="pre_logits")(x)
            x = activation(s.head.pre_logits_activation)(x)
        x = x.reshape(x.shape[0], -1)
        x = nn.Dropout(s.dropout, deterministic=not train)(x)
        # Uniform(+-1/sqrt(fan_in)) (PyTorch's Linear default). The EfficientNet/timm reference
        # uses 1/sqrt(num_classes), which for 10 classes starts training at logits of ~6 sigma.
        init = host_variance_scaling(1.0 / 3.0, "fan_in", "uniform")
        return nn.Dense(s.num_classes, kernel_init=init, name="classifier")(x)


def init_variables(
    model: nn.Module, resolution: int, in_channels: int = 3, seed: int = 0, *, key: jax.Array | None = None
):
    """Initialise `model` for NHWC images of this size; returns {'params', 'batch_stats'}.

    The PRNG key is `key` when given, else ``jax.random.key(seed)``. Jitted `lazy_init`: the
    forward pass is only traced for shapes, never run or compiled.
    """
    x = jax.ShapeDtypeStruct((1, resolution, resolution, in_channels), jnp.float32)
    if key is None:
        key = jax.random.key(seed)
    return jax.jit(lambda k: model.lazy_init(k, x, train=False))(key)


def abstract_variables(spec: NetSpec) -> dict:
    """The {'params', 'batch_stats'} tree of `Net(spec)` as shapes and dtypes only (nothing computed)."""
    return jax.eval_shape(lambda: init_variables(Net(spec), spec.resolution, spec.in_channels))
