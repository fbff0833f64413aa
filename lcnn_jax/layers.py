"""Building layers: conv+BN+activation, squeeze-and-excite, drop path.

Depthwise and pointwise convolutions have two formulations behind one switch, `impl`:

- ``"native"``: XLA's convolution op (`feature_group_count=C` for depthwise). Best on GPU/TPU.
- ``"fused"``: depthwise as k*k shifted multiply-adds, pointwise as a `dot_general` over
  channels. XLA:CPU fuses these and runs them ~10x (depthwise) and ~3x (pointwise) faster than
  its convolution op.
- ``"auto"`` (default): ``"fused"`` on CPU, ``"native"`` elsewhere, decided at trace time.

Both formulations use the same kernel layout (HWIO, I = in/groups) and padding, so parameters
are interchangeable and results agree to float rounding.
"""

from __future__ import annotations

from typing import Literal, Sequence

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from lcnn_jax.errors import ConfigError, unknown_choice
from lcnn_jax.spec import ACTIVATIONS, BatchNormSpec

Impl = Literal["auto", "native", "fused"]
IMPLS = ("auto", "native", "fused")


def resolve_impl(impl: str) -> str:
    """Turn ``"auto"`` into the fastest formulation for the current default backend."""
    if impl not in IMPLS:
        raise unknown_choice("conv implementation", impl, IMPLS)
    if impl == "auto":
        return "fused" if jax.default_backend() == "cpu" else "native"
    return impl


def host_variance_scaling(scale: float, mode: str, distribution: str):
    """He/Glorot-style initializer that draws on the host with numpy, seeded by the flax key.

    Same distribution as `jax.nn.initializers.variance_scaling` for HWIO/(in, out) kernels. Why
    on the host: XLA:CPU spends ~13 s compiling the ~70 threefry normal draws of a small
    MobileNetV3's init and ~1 s with one host callback per parameter (docs/benchmarks.md).
    """
    if mode not in ("fan_in", "fan_out") or distribution not in ("normal", "uniform"):
        raise ConfigError(f"unsupported initializer {mode}/{distribution}")

    def init(key, shape, dtype=jnp.float32):
        receptive = math.prod(shape[:-2])
        fan = (shape[-2] if mode == "fan_in" else shape[-1]) * receptive
        std = math.sqrt(scale / fan)
        data = jax.random.key_data(key) if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) else key

        def draw(words):
            rng = np.random.default_rng(np.asarray(words, np.uint64).ravel().tolist())
            if distribution == "normal":
                values = rng.standard_normal(shape) * std
            else:
                values = rng.uniform(-math.sqrt(3.0) * std, math.sqrt(3.0) * std, shape)
            return values.astype(dtype)

        return jax.pure_callback(draw, jax.ShapeDtypeStruct(shape, dtype), data, vmap_method="sequential")

    return init


def activation(name: str):
    """The activation function called `name` (see lcnn_jax.spec.ACTIVATIONS)."""
    fns = {
        "relu": nn.relu,
        "relu6": nn.relu6,
        "hard_swish": nn.hard_swish,
        "swish": nn.swish,
        "linear": lambda x: x,
    }
    if name not in fns:
        raise unknown_choice("activation", name, ACTIVATIONS)
    return fns[name]


def pad_amounts(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int]:
    """(low, high) padding of one spatial axis: TF 'same' puts the odd pixel at the end."""
    if padding == "symmetric":
        return kernel // 2, kernel // 2
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2
    raise unknown_choice("padding", padding, ("same", "symmetric"))


def _spatial_pads(x: jax.Array, kernel: int, stride: int, padding: str) -> list[tuple[int, int]]:
    return [pad_amounts(x.shape[1], kernel, stride, padding), pad_amounts(x.shape[2], kernel, stride, padding)]


def conv_native(x: jax.Array, w: jax.Array, stride: int, padding: str, groups: int = 1) -> jax.Array:
    """NHWC x HWIO convolution with XLA's conv op; `groups` = feature_group_count."""
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=(stride, stride),
        padding=_spatial_pads(x, w.shape[0], stride, padding),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def depthwise_fused(x: jax.Array, w: jax.Array, stride: int, padding: str) -> jax.Array:
    """Depthwise conv as k*k strided slices times per-channel weights, summed (XLA fuses it)."""
    k = w.shape[0]
    (pt, pb), (pl, pr) = _spatial_pads(x, k, stride, padding)
    xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    ho = (xp.shape[1] - k) // stride + 1
    wo = (xp.shape[2] - k) // stride + 1
    n, c = x.shape[0], x.shape[3]
    out = None
    for i in range(k):
        for j in range(k):
            patch = lax.slice(
                xp,
                (0, i, j, 0),
                (n, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c),
                (1, stride, stride, 1),
            )
            term = patch * w[i, j, 0]
            out = term if out is None else out + term
    return out


def pointwise_fused(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """1x1 conv as a dot_general over channels (subsampled first when strided)."""
    if stride > 1:
        x = x[:, ::stride, ::stride, :]
    return lax.dot_general(x, w[0, 0], (((3,), (0,)), ((), ())))


def conv2d(x: jax.Array, w: jax.Array, stride: int, padding: str, groups: int, impl: str) -> jax.Array:
    """Convolution in the formulation `impl` ('native' or 'fused'; resolve 'auto' first)."""
    c_in = x.shape[-1]
    if impl == "fused":
        if groups == c_in and w.shape[2] == 1 and groups > 1:
            return depthwise_fused(x, w, stride, padding)
        if groups == 1 and w.shape[0] == 1 and w.shape[1] == 1:
            return pointwise_fused(x, w, stride)
    elif impl != "native":
        raise unknown_choice("conv implementation", impl, ("native", "fused"))
    return conv_native(x, w, stride, padding, groups)


class Conv(nn.Module):
    """2-D convolution with an explicit formulation switch; depthwise when `depthwise=True`."""

    features: int
    kernel: int = 1
    stride: int = 1
    padding: str = "symmetric"
    depthwise: bool = False
    use_bias: bool = False
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c_in = x.shape[-1]
        if self.depthwise and self.features != c_in:
            raise ConfigError(f"depthwise conv needs features == input channels, got {self.features} vs {c_in}")
        groups = c_in if self.depthwise else 1
        # He init on fan-out (per group), the EfficientNet/timm choice; for depthwise kernels
        # (k, k, 1, C) the per-group fan-out is k*k, which Flax calls fan_in.
        init = host_variance_scaling(2.0, "fan_in" if self.depthwise else "fan_out", "normal")
        kernel = self.param("kernel", init, (self.kernel, self.kernel, c_in // groups, self.features))
        y = self.convolve(x, kernel, groups, resolve_impl(self.impl))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,))
        return y

    def convolve(self, x: jax.Array, kernel: jax.Array, groups: int, impl: str) -> jax.Array:
        """The bare convolution; a separate method so counters can intercept the formulation."""
        return conv2d(x, kernel, self.stride, self.padding, groups, impl)


class ConvBN(nn.Module):
    """Conv (no bias) -> BatchNorm -> activation; conv kernel and BN params live in one module."""

    features: int
    kernel: int = 1
    stride: int = 1
    padding: str = "symmetric"
    depthwise: bool = False
    act: str = "relu"
    bn: BatchNormSpec = BatchNormSpec()
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = Conv(
            self.features, self.kernel, self.stride, self.padding, self.depthwise, impl=self.impl, name="conv"
        )(x)
        y = nn.BatchNorm(
            use_running_average=not train, momentum=self.bn.momentum, epsilon=self.bn.epsilon, name="bn"
        )(y)
        return activation(self.act)(y)


class SqueezeExcite(nn.Module):
    """Global pool -> 1x1 reduce (bias) -> act -> 1x1 expand (bias) -> gate, times the input."""

    reduced: int
    act: str = "swish"
    gate: str = "sigmoid"
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = Conv(self.reduced, use_bias=True, impl=self.impl, name="reduce")(s)
        s = activation(self.act)(s)
        s = Conv(x.shape[-1], use_bias=True, impl=self.impl, name="expand")(s)
        gates = {"sigmoid": nn.sigmoid, "hard_sigmoid": nn.hard_sigmoid}
        if self.gate not in gates:
            raise unknown_choice("SE gate", self.gate, tuple(gates))
        return x * gates[self.gate](s)


class DropPath(nn.Module):
    """Stochastic depth: zero a whole sample's residual branch with probability `rate` in training.

    Draws from the 'dropout' rng stream, like nn.Dropout, so one `rngs={'dropout': key}` drives both.
    """

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, 0.0)


def force_native_convs(next_fun, args: Sequence, kwargs: dict, context):
    """Method interceptor that makes every lcnn `Conv` use XLA conv ops (for counting)."""
    if isinstance(context.module, Conv) and context.method_name == "convolve":
        x, kernel, groups, _ = args
        return next_fun(x, kernel, groups, "native")
    return next_fun(*args, **kwargs)
