"""The two conv formulations agree on outputs and gradients; padding conventions are right."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcnn_jax.errors import ConfigError
from lcnn_jax.layers import conv2d, pad_amounts, resolve_impl

CASES = list(itertools.product((1, 3, 5), (1, 2), ("same", "symmetric"), (9, 12)))


def _value_and_grads(fn, x, w, cot):
    out, vjp = jax.vjp(fn, x, w)
    return (out,) + vjp(cot)


@pytest.mark.parametrize("kernel,stride,padding,size", CASES)
def test_depthwise_formulations_agree(kernel, stride, padding, size):
    kx, kw, kc = jax.random.split(jax.random.key(kernel * 100 + stride * 10 + size), 3)
    c = 8
    x = jax.random.normal(kx, (2, size, size + 1, c))  # non-square, odd and even sides
    w = jax.random.normal(kw, (kernel, kernel, 1, c))
    ref = jax.jit(lambda x, w: conv2d(x, w, stride, padding, c, "native"))
    fused = jax.jit(lambda x, w: conv2d(x, w, stride, padding, c, "fused"))
    cot = jax.random.normal(kc, ref(x, w).shape)
    for a, b in zip(_value_and_grads(ref, x, w, cot), _value_and_grads(fused, x, w, cot)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("stride", (1, 2))
@pytest.mark.parametrize("size", (7, 8))
def test_pointwise_formulations_agree(stride, size):
    kx, kw, kc = jax.random.split(jax.random.key(stride + size), 3)
    x = jax.random.normal(kx, (3, size, size, 16))
    w = jax.random.normal(kw, (1, 1, 16, 24))
    ref = jax.jit(lambda x, w: conv2d(x, w, stride, "same", 1, "native"))
    fused = jax.jit(lambda x, w: conv2d(x, w, stride, "same", 1, "fused"))
    cot = jax.random.normal(kc, ref(x, w).shape)
    for a, b in zip(_value_and_grads(ref, x, w, cot), _value_and_grads(fused, x, w, cot)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-4)


def test_fused_leaves_full_convs_to_xla():
    x = jnp.ones((1, 8, 8, 3))
    w = jnp.ones((3, 3, 3, 4))
    jaxpr = jax.make_jaxpr(lambda x, w: conv2d(x, w, 2, "same", 1, "fused"))(x, w)
    assert any(e.primitive.name == "conv_general_dilated" for e in jaxpr.jaxpr.eqns)
    dw = jax.make_jaxpr(lambda x, w: conv2d(x, w, 1, "same", 4, "fused"))(jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 1, 4)))
    assert not any(e.primitive.name == "conv_general_dilated" for e in dw.jaxpr.eqns)


def test_tf_same_padding_puts_the_odd_pixel_at_the_end():
    assert pad_amounts(224, 3, 2, "same") == (0, 1)
    assert pad_amounts(225, 3, 2, "same") == (1, 1)
    assert pad_amounts(224, 5, 2, "same") == (1, 2)
    assert pad_amounts(224, 3, 1, "same") == (1, 1)
    assert pad_amounts(224, 5, 2, "symmetric") == (2, 2)
    # Both conventions give the same output size for odd kernels, so counts never depend on it.
    for n, k, s in itertools.product((7, 8, 97, 224), (1, 3, 5), (1, 2)):
        sizes = {(n + sum(pad_amounts(n, k, s, p)) - k) // s + 1 for p in ("same", "symmetric")}
        assert sizes == {-(-n // s)}


def test_impl_switch():
    assert resolve_impl("auto") == ("fused" if jax.default_backend() == "cpu" else "native")
    assert resolve_impl("native") == "native"
    with pytest.raises(ConfigError, match="valid: auto, native, fused"):
        resolve_impl("cudnn")
