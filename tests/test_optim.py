"""Schedules, the weight-decay mask, optimiser flavours, and bf16 train steps."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lcnn_jax.config import make_config
from lcnn_jax.net import Net, init_variables
from lcnn_jax.presets import get_spec
from lcnn_jax.train.optim import decay_mask, optimizer, schedule
from lcnn_jax.train.state import create_state
from lcnn_jax.train.steps import make_train_step, smoothed_cross_entropy


def test_warmup_then_cosine():
    cfg = make_config(overrides=["optim.lr=0.4", "optim.warmup_epochs=1"]).optim
    lr = schedule(cfg, steps_per_epoch=10, total_steps=110)
    assert float(lr(0)) == 0.0
    assert float(lr(5)) == pytest.approx(0.2)
    assert float(lr(10)) == pytest.approx(0.4)
    assert float(lr(60)) == pytest.approx(0.2, rel=1e-3)  # half-way down the cosine
    assert float(lr(110)) == pytest.approx(0.0, abs=1e-6)


def test_exponential_decay_097_every_24_epochs():
    cfg = make_config(overrides=["optim.schedule=exponential", "optim.lr=1.0", "optim.warmup_epochs=0"]).optim
    lr = schedule(cfg, steps_per_epoch=10, total_steps=1000)
    assert float(lr(23)) == pytest.approx(1.0)  # staircase: 24 steps = 2.4 epochs
    assert float(lr(24)) == pytest.approx(0.97)
    assert float(lr(48)) == pytest.approx(0.97**2)


def test_weight_decay_only_touches_kernels():
    variables = init_variables(Net(get_spec("mobilenet_v3_small", width=0.35, resolution=32, num_classes=3)), 32)
    mask = decay_mask(variables["params"])
    flat = jax.tree_util.tree_flatten_with_path(mask)[0]
    for path, decayed in flat:
        assert decayed == (str(path[-1].key) == "kernel"), path
    assert any(d for _, d in flat) and not all(d for _, d in flat)
    # With zero gradients, only kernels move under weight decay.
    cfg = make_config(overrides=["optim.weight_decay=0.1", "optim.lr=1.0", "optim.momentum=0"]).optim
    tx = optimizer(cfg, lambda step: 1.0)
    params = variables["params"]
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    for (path, u), (_, p) in zip(jax.tree_util.tree_flatten_with_path(updates)[0], jax.tree_util.tree_flatten_with_path(params)[0]):
        expected = -0.1 * p if str(path[-1].key) == "kernel" else jnp.zeros_like(p)
        np.testing.assert_allclose(u, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adamw"])
def test_optimisers_step(name):
    cfg = make_config(overrides=[f"optim.name={name}", "optim.grad_clip=1.0"]).optim
    tx = optimizer(cfg, lambda step: 0.01)
    params = {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}
    updates, _ = tx.update({"kernel": jnp.full((3, 2), 10.0), "bias": jnp.ones(2)}, tx.init(params), params)
    assert all(bool(jnp.all(jnp.isfinite(u))) and bool(jnp.any(u != 0)) for u in jax.tree.leaves(updates))


def test_label_smoothing():
    logits = jnp.array([[10.0, 0.0, 0.0]])
    plain = float(smoothed_cross_entropy(logits, jnp.array([0]), 0.0)[0])
    smooth = float(smoothed_cross_entropy(logits, jnp.array([0]), 0.3)[0])
    assert smooth > plain > 0


def test_bfloat16_compute_keeps_float32_params():
    spec = get_spec("mobilenet_v1", width=0.25, resolution=32, num_classes=10)
    model = Net(spec)
    cfg = make_config(overrides=["train.precision=bfloat16"])
    tx = optimizer(cfg.optim, schedule(cfg.optim, 4, 4))
    state = create_state(init_variables(model, 32), tx)
    step = jax.jit(make_train_step(model, tx, label_smoothing=0.1, ema_decay=0.9, precision="bfloat16"))
    batch = {"image": jax.random.normal(jax.random.key(1), (8, 32, 32, 3)), "label": jnp.arange(8) % 10}
    state, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"]))
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
    assert {x.dtype for x in jax.tree.leaves(state.batch_stats)} == {jnp.dtype(jnp.float32)}


def test_seeds_lower_to_one_program_so_they_share_the_compilation_cache():
    """The dropout key is train state, not a constant of the step: seed 1 reuses seed 0's compiled program."""
    spec = get_spec("mobilenet_v3_small", width=0.35, resolution=32, num_classes=10, dropout=0.2, stochastic_depth=0.1)
    model = Net(spec)
    cfg = make_config()
    tx = optimizer(cfg.optim, schedule(cfg.optim, 4, 4))
    step = jax.jit(make_train_step(model, tx, label_smoothing=0.1, ema_decay=0.9, precision="float32"))
    batch = {"image": jax.random.normal(jax.random.key(7), (4, 32, 32, 3)), "label": jnp.arange(4)}
    texts, losses = [], []
    for seed in (0, 1):
        state = create_state(init_variables(model, 32), tx, jax.random.key(seed))
        texts.append(step.lower(state, batch).as_text())
        losses.append(float(step(state, batch)[1]["loss"]))
    assert texts[0] == texts[1]
    assert losses[0] != losses[1]  # the key still reaches dropout: different seeds, different masks
