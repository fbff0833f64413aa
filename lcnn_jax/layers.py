"""Building layers: conv+BN+activation, squeeze-and-excite, drop path.

Every conv takes `impl`, the depthwise/pointwise formulation switch; the formulations
themselves live in lcnn_jax.convs.
"""

from __future__ import annotations

from typing import Sequence

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lcnn_jax.convs import conv2d, resolve_impl
from lcnn_jax.errors import ConfigError, unknown_choice
from lcnn_jax.spec import ACTIVATIONS, BatchNormSpec


def _host_initializer(distribution: str, std_of_shape):
    """An initializer of `distribution` values with std `std_of_shape(shape)`, drawn on the host from the flax key.

    Why on the host: XLA:CPU spends ~13 s compiling the ~70 threefry normal draws of a small
    MobileNetV3's init and ~1 s with one host callback per parameter (docs/benchmarks.md).
    """

    def init(key, shape, dtype=jnp.float32):
        std = std_of_shape(shape)
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


def host_variance_scaling(scale: float, mode: str, distribution: str):
    """He/Glorot-style initializer drawn on the host (see `_host_initializer`).

    Same distribution as `jax.nn.initializers.variance_scaling` for HWIO/(in, out) kernels.
    """
    if mode not in ("fan_in", "fan_out") or distribution not in ("normal", "uniform"):
        raise ConfigError(f"unsupported initializer {mode}/{distribution}")

    def std_of_shape(shape) -> float:
        fan = (shape[-2] if mode == "fan_in" else shape[-1]) * math.prod(shape[:-2])
        return math.sqrt(scale / fan)

    return _host_initializer(distribution, std_of_shape)


def host_normal(std: float):
    """N(0, std) initializer drawn on the host, like `host_variance_scaling`."""
    return _host_initializer("normal", lambda shape: std)


def is_kernel(path, leaf) -> bool:
    """True for a conv or dense weight leaf (`path` from tree_flatten_with_path): named 'kernel', >= 2 dims.

    BN scales/biases and conv/dense biases are not kernels: weight decay, pruning and
    quantization all leave them alone.
    """
    return bool(path) and getattr(path[-1], "key", None) == "kernel" and len(np.shape(leaf)) >= 2


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


class Conv(nn.Module):
    """2-D convolution with an explicit formulation switch; depthwise when `depthwise=True`."""

    features: int
    kernel: int = 1
    stride: int = 1
    padding: str = "symmetric"
    depthwise: bool = False
    use_bias: bool = False
    impl: str = "auto"
    init_std: float | None = None  # N(0, init_std) kernels instead of He (detection predictors)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c_in = x.shape[-1]
        if self.depthwise and self.features != c_in:
            raise ConfigError(f"depthwise conv needs features == input channels, got {self.features} vs {c_in}")
        groups = c_in if self.depthwise else 1
        if self.init_std is not None:
            init = host_normal(self.init_std)
        else:
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
