"""Every conv formulation agrees with XLA's conv op on outputs and gradients; padding is right."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcnn_jax.errors import ConfigError
from lcnn_jax.convs import IMPLS, conv2d, pad_amounts, resolve_impl

# Odd and even sides come from one input of size (size, size + 1).
CASES = list(itertools.product((1, 3, 5), (1, 2), ("same", "symmetric"), (9,)))


def _value_and_grads(fn, x, w, cot):
    out, vjp = jax.vjp(fn, x, w)
    return (out,) + vjp(cot)


@pytest.mark.parametrize("impl", ("shifted", "fused"))
@pytest.mark.parametrize("kernel,stride,padding,size", CASES)
def test_depthwise_formulations_agree(kernel, stride, padding, size, impl):
    kx, kw, kc = jax.random.split(jax.random.key(kernel * 100 + stride * 10 + size), 3)
    c = 8
    x = jax.random.normal(kx, (2, size, size + 1, c))  # non-square, odd and even sides
    w = jax.random.normal(kw, (kernel, kernel, 1, c))
    ref = jax.jit(lambda x, w: conv2d(x, w, stride, padding, c, "native"))
    fused = jax.jit(lambda x, w: conv2d(x, w, stride, padding, c, impl))
    cot = jax.random.normal(kc, ref(x, w).shape)
    for a, b in zip(_value_and_grads(ref, x, w, cot), _value_and_grads(fused, x, w, cot)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("impl", ("shifted", "fused"))
@pytest.mark.parametrize("stride", (1, 2))
@pytest.mark.parametrize("size", (7, 8))
def test_pointwise_formulations_agree(stride, size, impl):
    kx, kw, kc = jax.random.split(jax.random.key(stride + size), 3)
    x = jax.random.normal(kx, (3, size, size, 16))
    w = jax.random.normal(kw, (1, 1, 16, 24))
    ref = jax.jit(lambda x, w: conv2d(x, w, stride, "same", 1, "native"))
    fused = jax.jit(lambda x, w: conv2d(x, w, stride, "same", 1, impl))
    cot = jax.random.normal(kc, ref(x, w).shape)
    for a, b in zip(_value_and_grads(ref, x, w, cot), _value_and_grads(fused, x, w, cot)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-4)


@pytest.mark.parametrize("stride,padding", ((2, "same"), (1, "symmetric"), (2, "symmetric")))
def test_full_convs_agree(stride, padding):
    """Full convs: 'fused' is im2col + matmul, 'shifted' leaves them to XLA; both match native."""
    kx, kw, kc = jax.random.split(jax.random.key(stride), 3)
    x = jax.random.normal(kx, (2, 9, 10, 3))
    w = jax.random.normal(kw, (3, 3, 3, 8))
    ref = jax.jit(lambda x, w: conv2d(x, w, stride, padding, 1, "native"))
    cot = jax.random.normal(kc, ref(x, w).shape)
    for impl in ("shifted", "fused"):
        got = jax.jit(lambda x, w, impl=impl: conv2d(x, w, stride, padding, 1, impl))
        for a, b in zip(_value_and_grads(ref, x, w, cot), _value_and_grads(got, x, w, cot)):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-4)
    jaxpr = jax.make_jaxpr(lambda x, w: conv2d(x, w, stride, padding, 1, "fused"))(x, w)
    assert not any(e.primitive.name == "conv_general_dilated" for e in jaxpr.jaxpr.eqns)
    grouped = jax.make_jaxpr(lambda x, w: conv2d(x, w, 1, "same", 2, "fused"))(jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 2, 4)))
    assert any(e.primitive.name == "conv_general_dilated" for e in grouped.jaxpr.eqns)


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
    with pytest.raises(ConfigError, match="valid: auto, native, shifted, fused"):
        resolve_impl("cudnn")
    with pytest.raises(ConfigError, match="valid: native, shifted, fused"):
        conv2d(jnp.ones((1, 4, 4, 2)), jnp.ones((1, 1, 2, 2)), 1, "same", 1, "auto")
    assert IMPLS == ("auto", "native", "shifted", "fused")


def test_fused_gradients_in_a_network_block_match_native():
    """Depthwise then pointwise, BN-free, under jit with a scalar loss: the composed custom VJPs."""
    kx, k1, k2 = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(kx, (4, 11, 11, 6))
    w1 = jax.random.normal(k1, (3, 3, 1, 6))
    w2 = jax.random.normal(k2, (1, 1, 6, 5))

    def loss(impl):
        def f(x, w1, w2):
            y = jnp.tanh(conv2d(x, w1, 2, "same", 6, impl))
            return jnp.sum(conv2d(y, w2, 1, "same", 1, impl) ** 2)

        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))

    (ref, ref_grads), (got, got_grads) = loss("native")(x, w1, w2), loss("fused")(x, w1, w2)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    for a, b in zip(ref_grads, got_grads):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(a))))
