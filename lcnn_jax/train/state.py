"""The train state: params, BN statistics, optimiser state, step, and an EMA of the params."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training; a pytree that orbax saves and restores whole."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema_params: Any
    nonfinite_step: jax.Array  # first step whose loss was NaN/inf, -1 while none
    # Raw key data (uint32) that dropout/drop-path keys are folded from, per step. An argument of
    # the jitted step rather than a constant baked into it: runs that differ only in their seed
    # then lower to the same program, and share one entry of the persistent compilation cache.
    dropout_key: jax.Array


def create_state(variables: dict, tx: optax.GradientTransformation, dropout_key: jax.Array | None = None) -> TrainState:
    """A fresh state from initial variables (EMA starts at the initial params); `dropout_key` a PRNG key."""
    params = variables["params"]
    key = jax.random.key(0) if dropout_key is None else dropout_key
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        ema_params=jax.tree.map(jnp.copy, params),
        nonfinite_step=jnp.full((), -1, jnp.int32),
        dropout_key=jax.random.key_data(key),
    )
