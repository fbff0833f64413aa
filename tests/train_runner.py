"""Helper run as a subprocess by the training tests (device count and kills need fresh processes).

  python tests/train_runner.py steps OUT.json      a few train steps; prints losses + param sums
  python tests/train_runner.py train WORKDIR k=v…  train_and_evaluate (used for kill-and-resume)
"""

import json
import sys

import jax
import numpy as np


def steps(out_path: str) -> None:
    """Five train steps of a tiny model on fixed random data, set up as train_and_evaluate does."""
    from lcnn_jax.config import make_config
    from lcnn_jax.net import Net, init_variables
    from lcnn_jax.presets import get_spec
    from lcnn_jax.train import devices
    from lcnn_jax.train.optim import optimizer, schedule
    from lcnn_jax.train.state import create_state
    from lcnn_jax.train.steps import make_train_step

    # A gentle step size: with lr 0.1 on random data the trajectory is chaotic and amplifies the
    # (legitimately) different float reduction order of 8 devices by ~100x per step.
    cfg = make_config(overrides=["optim.warmup_epochs=0", "optim.lr=0.01"])
    spec = get_spec("mobilenet_v3_small", width=0.35, resolution=32, num_classes=10, dropout=0.2, stochastic_depth=0.1)
    model = Net(spec, impl="native")
    tx = optimizer(cfg.optim, schedule(cfg.optim, 5, 5))
    init_key, drop_key = jax.random.split(jax.random.key(0))
    mesh = devices.data_mesh()
    data = devices.batch_sharded(mesh)
    state = jax.device_put(create_state(init_variables(model, 32, key=init_key), tx, drop_key), devices.replicated(mesh))
    step = devices.jit_train_step(
        make_train_step(model, tx, label_smoothing=0.1, ema_decay=0.99, precision="float32"), mesh
    )
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(5):
        batch = {"image": rng.standard_normal((16, 32, 32, 3)).astype(np.float32), "label": rng.integers(0, 10, 16).astype(np.int32)}
        state, metrics = step(state, devices.put_batch(batch, data, 16))
        losses.append(float(metrics["loss"]))
    leaves = jax.tree.leaves(jax.device_get(state.params))
    out = {"devices": jax.device_count(), "losses": losses, "param_sums": [float(np.sum(np.abs(p))) for p in leaves]}
    with open(out_path, "w") as f:
        json.dump(out, f)


def train(workdir: str, overrides: list[str]) -> None:
    """train_and_evaluate with dotted overrides."""
    from lcnn_jax.config import make_config
    from lcnn_jax.train.loop import train_and_evaluate

    train_and_evaluate(make_config(overrides=overrides), workdir)


if __name__ == "__main__":
    if sys.argv[1] == "steps":
        steps(sys.argv[2])
    else:
        train(sys.argv[2], sys.argv[3:])
