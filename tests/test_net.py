"""The Flax network: shapes for every preset, jit forward, BN train/eval, dropout and drop-path rngs."""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcnn_jax.count import count
from lcnn_jax.net import Net, init_variables
from lcnn_jax.presets import build_model, get_spec, list_presets


@pytest.mark.parametrize("name", list_presets())
@pytest.mark.parametrize("resolution", (32, 64, 97, 224))
def test_output_and_feature_map_shapes(name, resolution):
    model = build_model(name, resolution=resolution, num_classes=7)
    x = jax.ShapeDtypeStruct((2, resolution, resolution, 3), jnp.float32)
    logits, variables = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)
    assert logits.shape == (2, 7)
    assert set(variables) == {"params", "batch_stats"}
    if resolution == 97:  # the last spatial conv sees ceil(97 / 32) = 4 pixels a side
        last_spatial = [r for r in count(model, x).layers if r.op != "dense" and r.out_shape[1] > 1][-1]
        assert last_spatial.out_shape[1:3] == (math.ceil(97 / 32),) * 2


TINY = [
    ("mobilenet_v1", dict(width=0.25)),
    ("mobilenet_v1_conv", dict(width=0.25)),
    ("mobilenet_v2", dict(width=0.35)),
    ("mobilenet_v3_large", dict(width=0.35)),
    ("mobilenet_v3_small", dict(width=0.35)),
    ("efficientnet_b0", dict(width=0.25, depth=0.5)),
]


@pytest.mark.parametrize("name,kw", TINY, ids=[n for n, _ in TINY])
def test_jit_forward_formulations_agree(name, kw):
    x = jax.random.uniform(jax.random.key(1), (2, 40, 40, 3))
    outs = []
    for impl in ("fused", "native"):
        model = build_model(name, resolution=40, num_classes=5, impl=impl, **kw)
        variables = init_variables(model, 40)
        outs.append(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))
    assert outs[0].shape == (2, 5)
    assert np.all(np.isfinite(outs[0]))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5)


def _tiny_b0(**kw):
    return Net(get_spec("efficientnet_b0", width=0.25, depth=0.5, resolution=32, num_classes=4, **kw))


def _train_fn(model):
    """Jitted train-mode apply; `key=None` runs without any rng."""
    def run(variables, x, key):
        rngs = None if key is None else {"dropout": key}
        return model.apply(variables, x, train=True, mutable=["batch_stats"], rngs=rngs)

    return jax.jit(run)


def test_bn_train_uses_batch_stats_and_eval_uses_running_averages():
    model = _tiny_b0(dropout=0.0, stochastic_depth=0.0)
    variables = init_variables(model, 32)
    x = jax.random.normal(jax.random.key(2), (4, 32, 32, 3)) * 3 + 1
    train, evaluate = _train_fn(model), jax.jit(model.apply)
    train_out, updates = train(variables, x, None)
    # Running averages moved by (1 - momentum) towards the batch statistics.
    before = variables["batch_stats"]["stem"]["bn"]["mean"]
    after = updates["batch_stats"]["stem"]["bn"]["mean"]
    assert not np.allclose(before, after)
    # Eval is per-sample: a sample's logits do not depend on the rest of the batch...
    eval_batch = evaluate(variables, x)
    eval_one = evaluate(variables, x[:1])
    np.testing.assert_allclose(eval_batch[:1], eval_one, rtol=1e-5, atol=1e-6)
    # ...while in training BN normalises with the batch's statistics.
    train_one, _ = train(variables, x[:1], None)
    assert not np.allclose(train_out[:1], train_one, atol=1e-4)
    assert not np.allclose(train_out, eval_batch, atol=1e-4)


def test_stochastic_depth_draws_from_the_dropout_rng():
    model = _tiny_b0(dropout=0.0, stochastic_depth=0.9)
    variables = init_variables(model, 32)
    x = jax.random.normal(jax.random.key(3), (8, 32, 32, 3))
    train = _train_fn(model)

    def run(seed):
        return train(variables, x, jax.random.key(seed))[0]

    np.testing.assert_array_equal(run(0), run(0))
    assert not np.allclose(run(0), run(1))
    with pytest.raises(flax.errors.InvalidRngError):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), variables, x)
    # Eval never drops and needs no rng.
    evaluate = jax.jit(lambda v, x, key: model.apply(v, x, rngs={"dropout": key}))
    np.testing.assert_array_equal(evaluate(variables, x, jax.random.key(4)), evaluate(variables, x, jax.random.key(5)))


def test_stochastic_depth_zero_needs_no_rng_and_dropout_does():
    model = _tiny_b0(dropout=0.0, stochastic_depth=0.0)
    variables = init_variables(model, 32)
    x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
    jax.eval_shape(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]), variables, x)
    with pytest.raises(flax.errors.InvalidRngError):
        dropped = _tiny_b0(dropout=0.5, stochastic_depth=0.0)
        jax.eval_shape(lambda v, x: dropped.apply(v, x, train=True, mutable=["batch_stats"]), variables, x)


def test_gradients_agree_across_formulations():
    # Layer-level agreement is checked exactly in test_layers; this checks the wiring end to end.
    spec = get_spec("mobilenet_v3_small", width=0.35, resolution=32, num_classes=3, dropout=0.0)
    x = jax.random.normal(jax.random.key(4), (2, 32, 32, 3))
    grads = []
    for impl in ("fused", "native"):
        model = Net(spec, impl=impl)
        variables = init_variables(model, 32)

        def loss(params):
            return jnp.sum(model.apply({**variables, "params": params}, x) ** 2)

        grads.append(jax.jit(jax.grad(loss))(variables["params"]))
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
        assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b) + 1e-7
