"""Jittable train and eval steps (pure functions of state and batch)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from lcnn_jax.compress.pruning import apply_masks, find_prune_state
from lcnn_jax.train.state import TrainState

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def smoothed_cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float) -> jax.Array:
    """Per-example softmax cross-entropy against label-smoothed one-hot targets."""
    n = logits.shape[-1]
    targets = optax.smooth_labels(jax.nn.one_hot(labels, n), smoothing) if smoothing else jax.nn.one_hot(labels, n)
    return optax.softmax_cross_entropy(logits, targets)


def _cast(tree, dtype):
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def classification_loss(label_smoothing: float):
    """loss(logits, batch) -> (mean label-smoothed cross-entropy, {'accuracy'}): the classifier's objective."""

    def loss(logits: jax.Array, batch: dict) -> tuple[jax.Array, dict]:
        value = smoothed_cross_entropy(logits, batch["label"], label_smoothing).mean()
        return value, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}

    return loss


def make_train_step(model, tx, *, ema_decay: float, precision: str, label_smoothing: float = 0.0, loss_fn=None):
    """train_step(state, batch) -> (state, metrics); dropout/drop-path keys are `state.dropout_key` folded per step.

    `loss_fn(outputs, batch) -> (loss, metrics)` sees the model's float32 outputs (any pytree);
    the default is `classification_loss(label_smoothing)`. Metrics are the loss, loss_fn's
    metrics and the gradient norm.
    """
    dtype = DTYPES[precision]
    loss_fn = loss_fn or classification_loss(label_smoothing)

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(jax.random.wrap_key_data(state.dropout_key), state.step)

        def objective(params):
            # bf16 compute: cast a copy of the float32 params; gradients flow back to float32.
            variables = {"params": _cast(params, dtype), "batch_stats": state.batch_stats}
            outputs, updates = model.apply(
                variables, batch["image"].astype(dtype), train=True, mutable=["batch_stats"], rngs={"dropout": key}
            )
            loss, aux = loss_fn(_cast(outputs, jnp.float32), batch)
            return loss, (aux, _cast(updates["batch_stats"], jnp.float32))

        (loss, (aux, batch_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        # EMA warm-up (as in TF's ExponentialMovingAverage with num_updates): early averages are
        # not dragged towards the random initialisation in short runs.
        decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
        pruning = find_prune_state(opt_state)  # found at trace time: the state's structure is static
        if pruning is not None:
            # The average of a pruned weight only decays towards zero; keep the EMA as sparse as the weights.
            ema = apply_masks(ema, pruning.masks)
        finite = jnp.isfinite(loss)
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state, ema_params=ema,
            nonfinite_step=jnp.where((state.nonfinite_step < 0) & ~finite, state.step, state.nonfinite_step),
        )
        metrics = {"loss": loss, **aux, "grad_norm": optax.tree.norm(grads)}
        return new_state, metrics

    return train_step


def make_eval_step(model):
    """eval_step(params, batch_stats, batch) -> summed loss, top-1 and top-5 hits, and count."""

    def eval_step(params, batch_stats, batch: dict) -> dict:
        logits = model.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=False)
        logits = logits.astype(jnp.float32)
        mask = batch["mask"].astype(jnp.float32)
        loss = smoothed_cross_entropy(logits, batch["label"], 0.0)
        top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
        hit5 = jnp.any(top5 == batch["label"][:, None], axis=-1)
        return {
            "loss": jnp.sum(loss * mask),
            "top1": jnp.sum((jnp.argmax(logits, -1) == batch["label"]) * mask),
            "top5": jnp.sum(hit5 * mask),
            "count": jnp.sum(mask),
        }

    return eval_step
