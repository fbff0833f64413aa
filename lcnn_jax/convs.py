"""Depthwise and pointwise convolution formulations, behind one switch (`impl`).

- ``"native"``: XLA's convolution op (`feature_group_count=C` for depthwise). The reference
  formulation, and the fastest on GPU/TPU.
- ``"shifted"``: depthwise as k*k strided slices times per-channel weights, pointwise as a
  `dot_general` over channels; gradients by autodiff. XLA:CPU fuses the forward pass well.
- ``"fused"``: the shifted forward pass with hand-written VJPs (below), and full convs (stems)
  as im2col plus the same row matmul. Fastest on CPU.
- ``"auto"`` (default): ``"fused"`` on CPU, ``"native"`` elsewhere, decided at trace time.

Why the custom VJPs (measured on 2 CPU cores, docs/benchmarks.md "Depthwise convolution"):
- Autodiff of the shifted depthwise form reduces `patch * g` over (N, H, W) once per tap: k*k
  single-threaded passes over two activation-sized tensors. One *variadic* reduce over W that
  carries all k*k sums reads them once; the small (k*k, N, H, C) remainder is summed after.
- Autodiff of the pointwise `dot_general` lets XLA's layout assignment transpose the output
  gradient (a large tensor, with the BN backward fused into the transpose) for the weight
  gradient. Transposing the *input* explicitly (`x.T @ g`) keeps that copy small and unfused.
The input gradient of the depthwise conv is the same shifted multiply-add run on the stride-
dilated output gradient with the flipped kernel, so it fuses like the forward pass.

All formulations share the HWIO kernel layout (I = in/groups) and the padding conventions, so
parameters are interchangeable and results agree to float rounding (tests/test_convs.py).
"""

from __future__ import annotations

import functools
from typing import Iterator

import jax
import jax.numpy as jnp
from jax import lax

from lcnn_jax.errors import unknown_choice
from lcnn_jax.spec import IMPLS


def resolve_impl(impl: str) -> str:
    """Turn ``"auto"`` into the fastest formulation for the current default backend."""
    if impl not in IMPLS:
        raise unknown_choice("conv implementation", impl, IMPLS)
    if impl == "auto":
        return "fused" if jax.default_backend() == "cpu" else "native"
    return impl


def pad_amounts(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int]:
    """(low, high) padding of one spatial axis: TF 'same' puts the odd pixel at the end."""
    if padding == "symmetric":
        return kernel // 2, kernel // 2
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        return total // 2, total - total // 2
    raise unknown_choice("padding", padding, ("same", "symmetric"))


def spatial_pads(x: jax.Array, kernel: int, stride: int, padding: str) -> list[tuple[int, int]]:
    """[(top, bottom), (left, right)] padding of an NHWC tensor."""
    return [pad_amounts(x.shape[1], kernel, stride, padding), pad_amounts(x.shape[2], kernel, stride, padding)]


def conv_native(x: jax.Array, w: jax.Array, stride: int, padding: str, groups: int = 1) -> jax.Array:
    """NHWC x HWIO convolution with XLA's conv op; `groups` = feature_group_count."""
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=(stride, stride),
        padding=spatial_pads(x, w.shape[0], stride, padding),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=groups,
    )


def _taps(xp: jax.Array, k: int, stride: int, out_hw: tuple[int, int]) -> Iterator[tuple[int, int, jax.Array]]:
    """(i, j, the strided window of padded `xp` that kernel tap (i, j) multiplies)."""
    n, c = xp.shape[0], xp.shape[3]
    ho, wo = out_hw
    for i in range(k):
        for j in range(k):
            end = (n, i + stride * (ho - 1) + 1, j + stride * (wo - 1) + 1, c)
            yield i, j, lax.slice(xp, (0, i, j, 0), end, (1, stride, stride, 1))


def _padded(x: jax.Array, k: int, stride: int, padding: str) -> jax.Array:
    (pt, pb), (pl, pr) = spatial_pads(x, k, stride, padding)
    return jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))


def _out_hw(xp: jax.Array, k: int, stride: int) -> tuple[int, int]:
    return (xp.shape[1] - k) // stride + 1, (xp.shape[2] - k) // stride + 1


def _multiply_add(xp: jax.Array, w: jax.Array, stride: int, out_hw: tuple[int, int], flip: bool = False) -> jax.Array:
    """Sum over taps of window (i, j) of `xp` times w[i, j] (w[k-1-i, k-1-j] when `flip`)."""
    k = w.shape[0]
    out = None
    for i, j, patch in _taps(xp, k, stride, out_hw):
        term = patch * (w[k - 1 - i, k - 1 - j, 0] if flip else w[i, j, 0])
        out = term if out is None else out + term
    return out


def depthwise_shifted(x: jax.Array, w: jax.Array, stride: int, padding: str) -> jax.Array:
    """Depthwise conv as k*k strided slices times per-channel weights, summed (XLA fuses it)."""
    k = w.shape[0]
    xp = _padded(x, k, stride, padding)
    return _multiply_add(xp, w, stride, _out_hw(xp, k, stride))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_fused(x: jax.Array, w: jax.Array, stride: int, padding: str) -> jax.Array:
    """`depthwise_shifted` with a hand-written VJP (one-pass kernel gradient; see module doc)."""
    return depthwise_shifted(x, w, stride, padding)


def _depthwise_fwd(x, w, stride, padding):
    return depthwise_shifted(x, w, stride, padding), (x, w)


def _depthwise_bwd(stride, padding, residuals, g):
    x, w = residuals
    k = w.shape[0]
    xp = _padded(x, k, stride, padding)
    # Kernel gradient: all k*k tap sums in one variadic reduce over W (one read of x and g).
    products = tuple(patch * g for _, _, patch in _taps(xp, k, stride, g.shape[1:3]))
    zeros = tuple(jnp.zeros((), g.dtype) for _ in products)
    partial = lax.reduce(products, zeros, lambda a, b: tuple(u + v for u, v in zip(a, b)), (2,))
    dw = jnp.stack(partial).sum(axis=(1, 2)).reshape(k, k, 1, -1).astype(w.dtype)
    # Input gradient: correlate the stride-dilated g with the flipped kernel over the padded
    # input's extent, then crop the padding away.
    hp, wp = xp.shape[1], xp.shape[2]
    ho, wo = g.shape[1], g.shape[2]
    gd = lax.pad(
        g,
        jnp.zeros((), g.dtype),
        ((0, 0, 0), (k - 1, hp - (stride * (ho - 1) + 1), stride - 1), (k - 1, wp - (stride * (wo - 1) + 1), stride - 1), (0, 0, 0)),
    )
    dxp = _multiply_add(gd, w, 1, (hp, wp), flip=True)
    (pt, _), (pl, _) = spatial_pads(x, k, stride, padding)
    dx = lax.slice(dxp, (0, pt, pl, 0), (x.shape[0], pt + x.shape[1], pl + x.shape[2], x.shape[3]))
    return dx.astype(x.dtype), dw


depthwise_fused.defvjp(_depthwise_fwd, _depthwise_bwd)


def _subsample(x: jax.Array, stride: int) -> jax.Array:
    return x[:, ::stride, ::stride, :] if stride > 1 else x


def pointwise_shifted(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """1x1 conv as a dot_general over channels (subsampled first when strided)."""
    return lax.dot_general(_subsample(x, stride), w[0, 0], (((3,), (0,)), ((), ())))


@jax.custom_vjp
def _matmul(x2: jax.Array, w2: jax.Array) -> jax.Array:
    return x2 @ w2


def _matmul_fwd(x2, w2):
    return x2 @ w2, (x2, w2)


def _matmul_bwd(residuals, g2):
    x2, w2 = residuals
    # x.T @ g with the transpose written out: XLA then copies x, not the (fused) gradient g.
    return g2 @ w2.T, jnp.transpose(x2) @ g2


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def pointwise_fused(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
    """`pointwise_shifted` as a row matmul with a hand-written VJP (see module doc)."""
    x = _subsample(x, stride)
    n, h, wd, c = x.shape
    return _matmul(x.reshape(n * h * wd, c), w[0, 0]).reshape(n, h, wd, w.shape[-1])


def full_fused(x: jax.Array, w: jax.Array, stride: int, padding: str) -> jax.Array:
    """A full (groups=1) k x k conv as im2col: the k*k shifted windows side by side, then one row matmul.

    Every full conv under 'fused': stems (3 input channels; 2x faster than XLA:CPU's conv op,
    whose column matrix is only k*k times the small input) and mobilenet_v1_conv's 3x3 layers,
    where XLA's conv op was 27x slower per train step despite the k*k larger columns
    (docs/benchmarks.md).
    """
    k = w.shape[0]
    xp = _padded(x, k, stride, padding)
    cols = jnp.concatenate([patch for _, _, patch in _taps(xp, k, stride, _out_hw(xp, k, stride))], axis=-1)
    n, ho, wo, kc = cols.shape
    return _matmul(cols.reshape(n * ho * wo, kc), w.reshape(kc, w.shape[-1])).reshape(n, ho, wo, w.shape[-1])


def conv2d(x: jax.Array, w: jax.Array, stride: int, padding: str, groups: int, impl: str) -> jax.Array:
    """Convolution in the formulation `impl` (resolve 'auto' first); other grouped convs go to XLA."""
    if impl not in IMPLS[1:]:
        raise unknown_choice("conv implementation", impl, IMPLS[1:])
    if impl != "native":
        depthwise = groups == x.shape[-1] and groups > 1 and w.shape[2] == 1
        pointwise = groups == 1 and w.shape[0] == 1 and w.shape[1] == 1
        if depthwise:
            return (depthwise_fused if impl == "fused" else depthwise_shifted)(x, w, stride, padding)
        if pointwise:
            return (pointwise_fused if impl == "fused" else pointwise_shifted)(x, w, stride)
        if impl == "fused" and groups == 1:
            return full_fused(x, w, stride, padding)
    return conv_native(x, w, stride, padding, groups)
