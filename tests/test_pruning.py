"""Magnitude pruning: reached sparsity, ERK, the schedule, zeros through training and resume, counts."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from lcnn_jax.compress.pruning import (
    PruneConfig,
    apply_masks,
    effective_counts,
    find_prune_state,
    layer_sparsities,
    magnitude_masks,
    prune,
    sparsity_report,
    sparsity_schedule,
)
from lcnn_jax.config import make_config
from lcnn_jax.count import count_spec
from lcnn_jax.errors import ConfigError
from lcnn_jax.net import Net, init_variables
from lcnn_jax.presets import get_spec
from lcnn_jax.train.checkpoints import Checkpoints
from lcnn_jax.train.optim import optimizer
from lcnn_jax.train.state import create_state

SHAPES = {"stem": (3, 3, 3, 16), "dw": (3, 3, 1, 16), "pw": (1, 1, 16, 48), "big": (3, 3, 48, 64), "tiny": (1, 1, 4, 3)}


def tiny_params(seed=0):
    """Conv kernels of several sizes (one depthwise), with BN params and a dense head with a bias."""
    # numpy, not jax.random: XLA:CPU takes seconds to compile threefry normals for each shape.
    rng = np.random.default_rng(seed)
    params = {
        name: {"conv": {"kernel": jnp.asarray(rng.standard_normal(shape), jnp.float32)},
               "bn": {"scale": jnp.ones(shape[-1]), "bias": jnp.zeros(shape[-1])}}
        for name, shape in SHAPES.items()
    }
    params["classifier"] = {"kernel": jnp.asarray(rng.standard_normal((64, 10)), jnp.float32), "bias": jnp.zeros(10)}
    return params


def kernel_sizes(params, cfg):
    return {p: int(np.prod(np.shape(leaf))) for p, leaf in _flat(params).items() if p in layer_sparsities(params, cfg)}


def _flat(tree):
    return {"/".join(str(k.key) for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def make_step(tx):
    """step(params, opt_state, seed): one jitted update with standard-normal gradients drawn from `seed`."""

    @jax.jit
    def update(params, opt_state, grads):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    def step(params, opt_state, seed):
        rng = np.random.default_rng(seed)
        grads = jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32), params)
        return update(params, opt_state, grads)

    return step


def assert_reached(params, targets, sizes, per_unit=None):
    """Each layer within half a rounding unit (a weight, or a channel's weights) of its target; globally the sum."""
    per_unit = per_unit or {p: 1 for p in targets}
    report = sparsity_report(params)
    for path, target in targets.items():
        assert abs(report["layers"][path] - target) <= 0.5 * per_unit[path] / sizes[path] + 1e-9, path
    expected = sum(targets[p] * sizes[p] for p in targets)
    zeros = sum(report["layers"][p] * sizes[p] for p in targets)
    assert abs(zeros - expected) <= 0.5 * sum(per_unit.values()) + 1e-6


def test_prunable_set_skips_bn_biases_depthwise_and_small_kernels():
    params = tiny_params()
    assert set(layer_sparsities(params, PruneConfig(0.5, min_size=0))) == {
        "stem/conv/kernel", "pw/conv/kernel", "big/conv/kernel", "tiny/conv/kernel", "classifier/kernel"
    }
    assert set(layer_sparsities(params, PruneConfig(0.5, min_size=500))) == {"pw/conv/kernel", "big/conv/kernel",
                                                                             "classifier/kernel"}
    assert "dw/conv/kernel" in layer_sparsities(params, PruneConfig(0.5, min_size=0, prune_depthwise=True))


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.9])
def test_uniform_reaches_target_per_layer_and_globally(sparsity):
    params = tiny_params()
    cfg = PruneConfig(sparsity, min_size=0)
    targets = layer_sparsities(params, cfg)
    assert set(targets.values()) == {sparsity}
    pruned = apply_masks(params, magnitude_masks(params, targets))
    assert_reached(pruned, targets, kernel_sizes(params, cfg))
    # The smallest magnitudes went: every kept weight is at least as large as every pruned one.
    w, p = np.abs(np.asarray(params["big"]["conv"]["kernel"])), np.asarray(pruned["big"]["conv"]["kernel"])
    assert w[p != 0].min() >= w[p == 0].max()
    # BN params, biases and the depthwise kernel are untouched.
    for path, leaf in _flat(params).items():
        if path not in targets:
            np.testing.assert_array_equal(_flat(pruned)[path], leaf)


@pytest.mark.parametrize("sparsity", [0.5, 0.75, 0.9])
def test_erk_keeps_the_global_target_and_small_layers_denser(sparsity):
    params = tiny_params()
    cfg = PruneConfig(sparsity, distribution="erk", min_size=0)
    targets = layer_sparsities(params, cfg)
    sizes = kernel_sizes(params, cfg)
    assert sum(targets[p] * sizes[p] for p in targets) == pytest.approx(sparsity * sum(sizes.values()), rel=1e-12)
    assert all(0.0 <= s < 1.0 for s in targets.values())
    # Denser where sum(shape)/prod(shape) is larger: the tiny kernel is capped dense, the big one sparsest.
    assert targets["tiny/conv/kernel"] == 0.0
    assert targets["big/conv/kernel"] == max(targets.values()) > sparsity
    by_density = sorted(targets, key=lambda p: sum(SHAPES.get(p.split("/")[0], (64, 10))) / sizes[p])
    assert [targets[p] for p in by_density] == sorted(targets.values(), reverse=True)
    pruned = apply_masks(params, magnitude_masks(params, targets))
    assert_reached(pruned, targets, sizes)
    assert sparsity_report(pruned, cfg)["global"] == pytest.approx(sparsity, abs=len(targets) / sum(sizes.values()))


def test_schedule_is_zero_then_cubic_then_the_target():
    cfg = PruneConfig(0.8, start_fraction=0.2, end_fraction=0.6)
    s = sparsity_schedule(cfg, total_steps=100)
    assert float(s(0)) == float(s(20)) == 0.0
    for step in (25, 40, 55):
        p = (step - 20) / 40
        assert float(s(step)) == pytest.approx(0.8 * (1 - (1 - p) ** 3), rel=1e-6)
    assert float(s(60)) == float(s(100)) == pytest.approx(0.8)
    assert float(s(30)) - float(s(20)) > float(s(60)) - float(s(50)) > 0  # prunes fastest early
    one_shot = sparsity_schedule(PruneConfig(0.5, start_fraction=0.5, end_fraction=0.5), 10)
    assert [float(one_shot(t)) for t in (4, 5, 6)] == [0.0, 0.5, 0.5]


def test_pruned_weights_stay_zero_through_sgd_momentum_and_weight_decay():
    params = tiny_params()
    cfg = PruneConfig(0.75, distribution="erk", min_size=0, start_fraction=0.1, end_fraction=0.6, update_every=3)
    total = 20
    base = optimizer(make_config(overrides=["optim.momentum=0.9", "optim.weight_decay=0.01"]).optim, lambda _: 0.05)
    tx = optax.chain(base, prune(cfg, total))
    step, schedule = make_step(tx), sparsity_schedule(cfg, total)
    targets, sizes = layer_sparsities(params, cfg), kernel_sizes(params, cfg)
    opt_state, zeros, seen = tx.init(params), {p: np.zeros(np.shape(v), bool) for p, v in _flat(params).items()}, []
    for t in range(1, total + 1):
        params, opt_state = step(params, opt_state, t)
        flat = _flat(params)
        for path, was_zero in zeros.items():
            now = np.asarray(flat[path]) == 0
            assert not np.any(was_zero & ~now), f"{path} came back to life at step {t}"
            zeros[path] = now
        seen.append(sparsity_report(params, cfg)["global"])
        assert int(find_prune_state(opt_state).count) == t
    # Masks change only on the grid (2, 5, 8, 11) and at the window's end (12), then hold the target.
    changed = [t for t in range(2, total + 1) if seen[t - 1] != seen[t - 2]]
    assert changed == [5, 8, 11, 12] and seen[:4] == [0.0] * 4  # at 2 the ramp is still at 0
    assert seen[4] == pytest.approx(float(schedule(5)), abs=0.01)
    assert_reached(params, targets, sizes)
    # Masks in the state agree with the zeros, and unpruned leaves still train.
    masks = _flat(find_prune_state(opt_state).masks)
    for path in targets:
        np.testing.assert_array_equal(masks[path], np.asarray(_flat(params)[path]) != 0)
    assert not np.allclose(_flat(params)["big/bn/scale"], 1.0)


def test_pruning_must_follow_the_optimiser():
    """Chained before momentum SGD, pruned weights move off zero again (hence chain(base, prune))."""
    cfg = PruneConfig(0.5, min_size=0, start_fraction=0.0, end_fraction=0.0)
    results = {}
    for order in ("after", "before"):
        parts = [optax.sgd(0.05, momentum=0.9), prune(cfg, 10)]
        tx = optax.chain(*(parts if order == "after" else parts[::-1]))
        step, params = make_step(tx), tiny_params()
        opt_state = tx.init(params)
        for t in range(4):
            params, opt_state = step(params, opt_state, t)
        pruned = ~np.asarray(find_prune_state(opt_state).masks["big"]["conv"]["kernel"])
        results[order] = np.count_nonzero(np.asarray(params["big"]["conv"]["kernel"])[pruned])
    assert results["after"] == 0 and results["before"] > 0


def test_structured_pruning_removes_whole_output_channels():
    params = tiny_params()
    cfg = PruneConfig(0.5, min_size=0, structured=True, start_fraction=0.0, end_fraction=0.5, update_every=2)
    targets = layer_sparsities(params, cfg)
    tx = optax.chain(optax.sgd(0.05, momentum=0.9), prune(cfg, 10))
    step, opt_state = make_step(tx), tx.init(params)
    for t in range(10):
        params, opt_state = step(params, opt_state, t)
    sizes, per_channel_weights = kernel_sizes(params, cfg), {}
    for path in targets:
        w = np.asarray(_flat(params)[path])
        per_channel = (w.reshape(-1, w.shape[-1]) == 0).all(axis=0)
        assert np.array_equal(per_channel, (w.reshape(-1, w.shape[-1]) == 0).any(axis=0)), path
        assert per_channel.sum() == round(0.5 * w.shape[-1]), path
        per_channel_weights[path] = sizes[path] // w.shape[-1]
    assert_reached(params, targets, sizes, per_channel_weights)


def test_masks_survive_checkpoint_and_resume(tmp_path):
    cfg = PruneConfig(0.75, min_size=0, start_fraction=0.0, end_fraction=0.5, update_every=2)
    total = 12
    tx = optax.chain(optax.sgd(0.05, momentum=0.9, nesterov=True), prune(cfg, total))
    step = make_step(tx)

    def run(state, start, stop):
        params, opt_state = state.params, state.opt_state
        for t in range(start, stop):
            params, opt_state = step(params, opt_state, t)
        return state.replace(step=jnp.asarray(stop, jnp.int32), params=params, opt_state=opt_state)

    fresh = create_state({"params": tiny_params()}, tx)
    straight = run(fresh, 0, total)
    middle = run(fresh, 0, 4)  # mid-ramp: masks partly pruned, momentum non-zero
    ckpts = Checkpoints(tmp_path / "ckpt", every_steps=1, keep=2)
    ckpts.save(4, middle, force=True)
    restored = ckpts.restore(4, create_state({"params": tiny_params(seed=1)}, tx))
    ckpts.close()
    assert int(find_prune_state(restored.opt_state).count) == 4
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(middle)):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    resumed = run(restored, 4, total)
    # Resuming is the same run: bitwise equal params and masks, zeros kept, target reached.
    for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight)):
        np.testing.assert_array_equal(a, b)
    assert np.all(np.asarray(resumed.params["big"]["conv"]["kernel"])[
        ~np.asarray(find_prune_state(middle.opt_state).masks["big"]["conv"]["kernel"])] == 0)
    assert sparsity_report(resumed.params, cfg)["global"] == pytest.approx(0.75, abs=1e-3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(sparsity=1.0), "sparsity must be in [0, 1), got 1.0"),
        (dict(sparsity=-0.1), "sparsity must be in [0, 1), got -0.1"),
        (dict(sparsity=0.5, distribution="foo"), "unknown sparsity distribution 'foo'"),
        (dict(sparsity=0.5, distribution="ekr"), "did you mean erk?"),
        (dict(sparsity=0.5, start_fraction=0.8, end_fraction=0.5), "start_fraction <= end_fraction"),
        (dict(sparsity=0.5, update_every=0), "update_every must be >= 1"),
    ],
)
def test_invalid_config_is_a_one_line_config_error(kwargs, message):
    with pytest.raises(ConfigError) as info:
        PruneConfig(**kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_prune_needs_params():
    tx = prune(PruneConfig(0.5), 10)
    params = tiny_params()
    with pytest.raises(ValueError, match="needs the params"):
        tx.update(params, tx.init(params))


@pytest.fixture(scope="module")
def small_net():
    spec = get_spec("mobilenet_v3_small", width=0.35, resolution=32, num_classes=10)
    return spec, init_variables(Net(spec), 32)["params"], count_spec(spec)


def test_effective_counts_scale_each_layer_by_its_kernel_density(small_net):
    spec, params, counts = small_net
    dense = effective_counts(spec, params)
    assert dense.unmatched == ()
    assert (dense.effective_params, dense.effective_macs) == (dense.params, dense.macs) == (counts.params, counts.macs)
    # Every conv/dense row found its kernel, and every kernel in the net has a row.
    rows = {r.name.split("#")[0] + "/kernel" for r in counts.layers}
    assert rows == {p for p in _flat(params) if p.endswith("/kernel")}

    cfg = PruneConfig(0.5, min_size=0, prune_depthwise=True)
    targets = layer_sparsities(params, cfg)
    assert len(targets) == len(rows)
    half = effective_counts(counts, apply_masks(params, magnitude_masks(params, targets)))
    kernel_weights = sum(np.size(_flat(params)[p]) for p in targets)
    pruned_weights = sum(round(0.5 * np.size(_flat(params)[p])) for p in targets)
    assert half.params == dense.params and half.macs == dense.macs
    assert half.effective_params == dense.params - pruned_weights
    assert half.effective_params == pytest.approx(dense.params - 0.5 * kernel_weights, abs=len(targets))
    assert half.effective_macs == pytest.approx(0.5 * dense.macs, rel=1e-2)

    # Pruning only the head's big layer drops MACs by exactly that layer's share.
    name = "pre_logits"
    only = magnitude_masks(params, {f"{name}/kernel": 0.5})
    one = effective_counts(counts, apply_masks(params, only))
    row = next(r for r in counts.layers if r.name == name)
    assert one.effective_macs == pytest.approx(dense.macs - 0.5 * row.macs, abs=1)


def test_erk_on_a_real_net_keeps_the_global_target(small_net):
    _, params, _ = small_net
    cfg = PruneConfig(0.75, distribution="erk")
    targets = layer_sparsities(params, cfg)
    sizes = {p: np.size(_flat(params)[p]) for p in targets}
    assert "stage0_block0/dw/conv/kernel" not in targets and "stem/conv/kernel" not in targets
    assert sum(targets[p] * sizes[p] for p in targets) == pytest.approx(0.75 * sum(sizes.values()), rel=1e-12)
    assert 0.0 in targets.values()  # some small layers are capped dense
