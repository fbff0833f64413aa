"""Int8 post-training quantization (qwix), 8/4-bit quantization-aware training, model bytes.

Checked with qwix 0.1.8 and aqtp 0.9.0 on jax 0.10.2 / flax 0.12.8 (CPU), on a tiny net of lcnn
`Conv`s (depthwise 3x3, pointwise) and a Dense head. Both libraries only see
`lax.conv_general_dilated` / `lax.dot_general` (and qwix must find the kernel among the module's
params), so lcnn convs must run in the "native" formulation for them: in "fused" (the CPU
default) qwix silently quantized only the Dense head and left every conv float.

- PTQ: qwix's `PtqProvider`. With native convs it ran int8 through the depthwise conv (error
  0.0099 on logits of magnitude 0.97): kernels stored as int8 `QArray`s with per-output-channel
  scales, each conv/dense an int8 x int8 op accumulating in int32 (`i32` in the jaxpr), then
  rescaled, i.e. the deployed arithmetic rather than a simulation. Activation scales are static
  and per tensor, clipped at the 99.99th percentile of |x| (the largest over the calibration
  batches): lcnn measures the ranges (`_calibrate`) because qwix's own statistics average
  per-example maxima, then hands them to `qwix.quantize_params` as its quant stats.
- QAT: fake quant written here (~25 lines), because neither library trains lcnn's convs:
  * qwix's `QtProvider` (int8) fails in the backward pass of the depthwise conv:
    "ValueError: conv_general_dilated lhs feature dimension size divided by feature_group_count
    must equal the rhs input feature dimension size, but 4 // 4 != 4." (conv_general_qt_bwd); at
    int4 the forward already fails on CPU: "INVALID_ARGUMENT: ... The XLA CPU/GPU backend does
    not support custom element sizes on non-sub-byte types". Without grouped convs it trains.
  * AQT's conv (`aqt_conv_general.make_conv_general_dilated`, also inside
    `aqt_flax.AqtConvGeneralDilated`) runs forward and backward without error, but its rounding
    has no straight-through gradient: every conv kernel, depthwise or not, at 8 and 4 bits, gets
    a gradient of exactly 0. The loss still falls, as the float Dense head learns, which is how
    "AQT's QAT trains through them" can look true.
  Here kernels are fake-quantized per output channel and conv/dense inputs per tensor, with an
  identity gradient through the rounding; it happens before `Conv.convolve`, so every
  formulation keeps working (the native one trains a small MobileNetV3 3-5x slower per step on
  CPU, docs/benchmarks.md), and it uses qwix's int8 grid, so 8-bit QAT trains the weights that
  `ptq_int8` stores.
- `model_bytes` counts kernels at the chosen precision plus their float32 scales.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Iterable

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import qwix

from lcnn_jax.errors import ConfigError, unknown_choice
from lcnn_jax.layers import Conv, force_native_convs, is_kernel

BITS = (32, 8, 4)
_CALIBRATION = "quant_calibration"  # flax collection the calibration pass sows input ranges into


def check_bits(bits: Any) -> int:
    """`bits` as an int if it is a supported precision (32 = float, 8, 4), else a ConfigError."""
    valid = tuple(str(b) for b in BITS)
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise ConfigError(f"quantization bits must be an integer, got {bits!r}; valid: {', '.join(valid)}")
    if int(bits) not in BITS:
        raise unknown_choice("quantization bits", str(bits), valid)
    return int(bits)


def _bound(bits: int) -> float:
    # qwix's symmetric int bound (qwix numerics.get_symmetric_bound): max|x| maps to 127.5, the
    # outer edge of the top bucket, and codes span -128..127; QAT uses the same so that its
    # weights are the ones PTQ stores.
    return 2.0 ** (bits - 1) - 0.5


# ---------------------------------------------------------------------------------------------
# Model bytes


def model_bytes(params, bits: int, sparse: bool = False) -> int:
    """Bytes of `params` with kernels stored at `bits` (packed) plus their float32 scales.

    Kernels are leaves named "kernel" with >= 2 dims (conv HWIO, dense (in, out)). Below 32 bits
    each also stores one float32 weight scale per output channel and one float32 activation
    scale for its input. Everything else (BN, biases; BN statistics when a whole variables dict
    is passed) counts as float32. `sparse` stores each kernel as a bitmap (1 bit per weight) plus
    its non-zero values only, the usual format for unstructured sparsity, and needs concrete
    values; otherwise shapes suffice, so abstract params work.
    """
    bits = check_bits(bits)
    total = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        shape = tuple(np.shape(leaf))
        size = math.prod(shape)
        if not is_kernel(path, leaf):
            total += 4 * size
            continue
        stored = int(np.count_nonzero(np.asarray(leaf))) if sparse else size
        total += -(-stored * bits // 8) + (-(-size // 8) if sparse else 0)
        if bits < 32:
            total += 4 * (shape[-1] + 1)
    return total


# ---------------------------------------------------------------------------------------------
# Quantization-aware training: fake quant with a straight-through estimator


def _round_clip(v: jax.Array, bits: int) -> jax.Array:
    return jnp.clip(jnp.round(v), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _codes(v: jax.Array, bits: int) -> jax.Array:
    """`bits`-bit integer codes of `v` (round, clip) with an identity (straight-through) gradient."""
    return _round_clip(v, bits)


_codes.defvjp(lambda v, bits: (_round_clip(v, bits), None), lambda bits, _, g: (g,))


def fake_quant(x: jax.Array, bits: int, reduce_axes: tuple[int, ...] | None = None) -> jax.Array:
    """`x` rounded to `bits`-bit integer codes times an absmax scale; gradient as identity.

    The scale is ``max|x| / (2^(bits-1) - 0.5)`` over `reduce_axes` (all axes when None: one
    per-tensor scale); codes are clipped to [-2^(bits-1), 2^(bits-1) - 1]. The scale is a
    constant for the gradient, and the straight-through gradient is 1 everywhere, also for the
    top value, which clips by at most half a step.
    """
    bits = check_bits(bits)
    if bits == 32:
        return x
    absmax = jax.lax.stop_gradient(jnp.max(jnp.abs(x), axis=reduce_axes, keepdims=True))
    scale = jnp.where(absmax > 0, absmax / _bound(bits), 1.0).astype(x.dtype)
    return _codes(x / scale, bits) * scale


def fake_quant_kernels(params, bits: int):
    """`params` with every kernel fake-quantized per output channel (last axis); the rest as is."""
    bits = check_bits(bits)

    def leaf(path, p):
        if bits == 32 or not is_kernel(path, p):
            return p
        return fake_quant(p, bits, tuple(range(p.ndim - 1)))

    return jax.tree_util.tree_map_with_path(leaf, params)


def _input_quantizer(bits: int):
    """Method interceptor that fake-quantizes (per tensor) the input of every lcnn Conv and Dense."""

    def interceptor(next_fun, args, kwargs, context):
        is_conv = isinstance(context.module, Conv) and context.method_name == "convolve"
        is_dense = isinstance(context.module, nn.Dense) and context.method_name == "__call__"
        if is_conv or is_dense:
            return next_fun(fake_quant(args[0], bits), *args[1:], **kwargs)
        return next_fun(*args, **kwargs)

    return interceptor


@dataclasses.dataclass(frozen=True)
class QatModel:
    """A model whose `apply` fake-quantizes kernels and layer inputs; other attributes pass through.

    A drop-in for the model in `make_train_step` / `make_eval_step`: same `apply` signature and
    the same variables, and gradients reach the float params through the straight-through
    estimator. The conv formulation (`impl`) is kept, as quantization happens before the conv.
    """

    model: nn.Module
    bits: int  # kernels, per output channel
    act_bits: int  # conv/dense inputs, per tensor and batch; 32 leaves them float

    def apply(self, variables, *args, **kwargs):
        """`model.apply` on fake-quantized kernels, with fake-quantized conv/dense inputs."""
        variables = {**variables, "params": fake_quant_kernels(variables["params"], self.bits)}
        if self.act_bits == 32:
            return self.model.apply(variables, *args, **kwargs)
        with nn.intercept_methods(_input_quantizer(self.act_bits)):
            return self.model.apply(variables, *args, **kwargs)

    def __getattr__(self, name: str):
        if name == "model":  # not set yet (copy/unpickle): avoid recursing into ourselves
            raise AttributeError(name)
        return getattr(self.model, name)


def qat_model(model: nn.Module, bits: int, act_bits: int | None = None):
    """`model` for quantization-aware training at `bits` (32: the float model itself).

    `act_bits` None means 8-bit inputs when the kernels are quantized: 4-bit kernels with 8-bit
    activations (W4A8) is the usual low-bit setting for depthwise nets, whose activations
    quantize worse than their weights.
    """
    bits = check_bits(bits)
    act_bits = (8 if bits < 32 else 32) if act_bits is None else check_bits(act_bits)
    if bits == 32 and act_bits == 32:
        return model
    return QatModel(model, bits, act_bits)


# ---------------------------------------------------------------------------------------------
# Post-training int8 quantization (qwix)


def _input_range(percentile: float):
    """Interceptor that sows the (100 - p)-th and p-th percentiles of the input of every lcnn Conv and Dense."""

    def interceptor(next_fun, args, kwargs, context):
        is_conv = isinstance(context.module, Conv) and context.method_name == "convolve"
        is_dense = isinstance(context.module, nn.Dense) and context.method_name == "__call__"
        if is_conv or is_dense:
            x = args[0]
            low, high = (jnp.min(x), jnp.max(x)) if percentile >= 100 else jnp.percentile(x, jnp.array([100 - percentile, percentile]))
            zero = lambda: jnp.zeros((), jnp.float32)  # the range always holds 0, which must quantize exactly
            context.module.sow(_CALIBRATION, "low", low, reduce_fn=jnp.minimum, init_fn=zero)
            context.module.sow(_CALIBRATION, "high", high, reduce_fn=jnp.maximum, init_fn=zero)
        return next_fun(*args, **kwargs)

    return interceptor


def _calibrate(model: nn.Module, variables, batches: Iterable, percentile: float) -> dict[tuple[str, ...], tuple[float, float]]:
    """{module path: (low, high) clipping range of its input} for every conv/dense layer, widest over the batches."""

    @jax.jit
    def run(variables, x):
        with nn.intercept_methods(_input_range(percentile)):
            _, state = model.apply(variables, x, mutable=[_CALIBRATION])
        return state[_CALIBRATION]

    ranges: dict[tuple[str, ...], tuple[float, float]] = {}
    for x in batches:
        flat = flax.traverse_util.flatten_dict(jax.device_get(run(variables, jnp.asarray(x))))
        for path, value in flat.items():
            key, which = path[:-1], path[-1]
            low, high = ranges.get(key, (0.0, 0.0))
            ranges[key] = (min(low, float(value)), high) if which == "low" else (low, max(high, float(value)))
    return ranges


@dataclasses.dataclass(frozen=True)
class Int8Model:
    """An int8 model from `ptq_int8`: call it on NHWC images for (float) logits."""

    model: nn.Module  # the qwix-wrapped module; apply it under `force_native_convs`
    variables: Any  # int8 kernels (qwix QArrays) with scales, activation scales, BN statistics
    act_scales: dict[str, float]  # per-layer input scale, keyed "module/path"
    apply_fn: Callable[[Any, jax.Array], jax.Array]  # jitted (variables, x) -> logits

    def __call__(self, x: jax.Array) -> jax.Array:
        """Logits of the quantized model (eval mode)."""
        return self.apply_fn(self.variables, jnp.asarray(x))


def ptq_int8(model: nn.Module, variables, calibration_batches: Iterable, percentile: float = 99.99,
             asymmetric: bool = True) -> Int8Model:
    """Int8 weights (per output channel, symmetric) and activations (per tensor, clipped at percentiles).

    A layer's input range is [(100 - p)-th, p-th] percentile of its input values (p = 100: min
    and max), the widest over the calibration batches. Clipping the rare extremes (TensorRT's
    percentile calibration) gives the bulk finer steps. `asymmetric` maps that range onto all 256
    codes with a zero point: most inputs here follow swish/ReLU and are nearly one-signed, so a
    symmetric grid would leave about half its codes unused. On the quickstart model (2 seeds)
    prediction agreement with float was 97.5/97.8% with symmetric max ranges, 98.1/97.7% with
    symmetric 99.99th percentiles, and see README "Pruning and quantization" for asymmetric.

    `model` is an lcnn `Net` (or any module of lcnn `Conv`s and `nn.Dense`s) called as
    ``model.apply(variables, x)`` in eval mode; BN, residual adds, pooling and SE gates stay float.
    """
    batches = [jnp.asarray(x) for x in calibration_batches]
    if not batches:
        raise ConfigError("ptq_int8 needs at least one calibration batch")
    if not 0 < percentile <= 100:
        raise ConfigError(f"calibration percentile must be in (0, 100], got {percentile}")
    ranges = _calibrate(model, variables, batches, percentile)
    rule = qwix.QuantizationRule(
        module_path=".*", weight_qtype=jnp.int8, act_qtype=jnp.int8, act_static_scale=True,
        act_calibration_method="minmax" if asymmetric else "absmax",
    )
    qmodel = qwix.quantize_model(model, qwix.PtqProvider([rule]))

    def init():
        with nn.intercept_methods(force_native_convs):
            return qmodel.init(jax.random.key(0), batches[0][:1])

    abstract = jax.eval_shape(init)["params"]
    # qwix names each activation scale "<op>_lhs_scale" in the layer that runs the op. Its
    # SRQ statistics are running sums with a count: a count of 1 hands it our ranges as they are.
    stats: dict[tuple[str, ...], dict[str, Any]] = {}
    act_scales = {}
    for path, leaf in flax.traverse_util.flatten_dict(abstract).items():
        name = path[-1]
        if not (isinstance(name, str) and name.endswith("_lhs_scale")):
            continue
        module = path[:-1]
        if module not in ranges:
            raise ConfigError(f"no calibration statistic for the quantized input of {'/'.join(module)}")
        low, high = ranges[module]
        full = functools.partial(np.full, leaf.shape, dtype=np.float32)
        stat = {"count": np.ones((), np.int32)}  # numpy: quantize_params tests it in Python
        if asymmetric:
            stat.update(sum_of_min=full(low), sum_of_max=full(high))
            act_scales["/".join(module)] = (high - low) / 255.0  # qwix's asymmetric int8 span: -128..127
        else:
            stat.update(sum_of_absmax=full(max(-low, high)))
            act_scales["/".join(module)] = max(-low, high) / _bound(8)
        stats[module + (name.removesuffix("_scale"),)] = stat
    quant_stats = flax.traverse_util.unflatten_dict(stats) if stats else {}
    # Jitted: eagerly, each kernel's quantization compiles its own small ops (~6 s on CPU).
    params = jax.jit(lambda p: qwix.quantize_params(p, abstract, quant_stats))(dict(variables["params"]))

    @jax.jit
    def apply_fn(variables, x):
        # The libraries only intercept XLA's conv op: lcnn's fused/shifted convs would bypass them.
        with nn.intercept_methods(force_native_convs):
            return qmodel.apply(variables, x)

    return Int8Model(qmodel, {**variables, "params": params}, act_scales, apply_fn)
