"""Learning-rate schedules and optimisers (optax), with weight decay on kernels only."""

from __future__ import annotations

import jax
import optax

from lcnn_jax.compress.pruning import PruneConfig, prune
from lcnn_jax.config import CompressConfig, Config, OptimConfig
from lcnn_jax.errors import ConfigError
from lcnn_jax.layers import is_kernel


def schedule(cfg: OptimConfig, steps_per_epoch: int, total_steps: int) -> optax.Schedule:
    """Linear warm-up to `cfg.lr`, then cosine to 0, exponential decay, or constant."""
    warmup = min(int(round(cfg.warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))
    if cfg.schedule == "cosine":
        main = optax.cosine_decay_schedule(cfg.lr, max(total_steps - warmup, 1))
    elif cfg.schedule == "exponential":
        # TF/EfficientNet: x decay_rate every decay_epochs, in steps (staircase).
        main = optax.exponential_decay(
            cfg.lr, transition_steps=max(1, int(round(cfg.decay_epochs * steps_per_epoch))),
            decay_rate=cfg.decay_rate, staircase=True,
        )
    else:
        main = optax.constant_schedule(cfg.lr)
    if warmup == 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.lr, warmup), main], [warmup])


def decay_mask(params):
    """True for conv and dense kernels; BN scales/biases and all biases are not decayed."""
    return jax.tree_util.tree_map_with_path(is_kernel, params)


def optimizer(cfg: OptimConfig, lr: optax.Schedule) -> optax.GradientTransformation:
    """The optimiser named by `cfg.name`, with clipping and (masked) weight decay."""
    parts = []
    if cfg.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(cfg.grad_clip))
    if cfg.name == "adamw":
        parts.append(optax.adamw(lr, weight_decay=cfg.weight_decay, mask=decay_mask))
    else:
        if cfg.weight_decay > 0:  # L2 through the gradient, as the TF/timm recipes for these optimisers do
            parts.append(optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask))
        if cfg.name == "sgd":
            parts.append(optax.sgd(lr, momentum=cfg.momentum or None, nesterov=cfg.nesterov))
        else:
            # TF1-style RMSProp as EfficientNet used it: accumulator starts at 1, eps inside the sqrt.
            parts.append(
                optax.rmsprop(lr, decay=cfg.rmsprop_decay, eps=cfg.rmsprop_eps, initial_scale=1.0,
                              eps_in_sqrt=True, momentum=cfg.momentum or None)
            )
    return optax.chain(*parts)


def prune_config(cfg: CompressConfig, total_steps: int) -> PruneConfig | None:
    """The pruning schedule `cfg` asks for over `total_steps` (None when it asks for none)."""
    if cfg.prune_start > cfg.prune_end:
        raise ConfigError(
            f"compress.prune_start ({cfg.prune_start}) must not be after compress.prune_end ({cfg.prune_end})"
        )
    if cfg.sparsity == 0:
        return None
    ramp = (cfg.prune_end - cfg.prune_start) * total_steps
    # 20 mask updates over the ramp by default: finer steps only cost compute, coarser ones
    # remove many weights at once and hurt accuracy in short runs.
    every = cfg.prune_every or max(1, int(ramp // 20))
    return PruneConfig(sparsity=cfg.sparsity, distribution=cfg.distribution, start_fraction=cfg.prune_start,
                       end_fraction=cfg.prune_end, update_every=every, structured=cfg.structured)


def train_transform(config: Config, lr: optax.Schedule, total_steps: int) -> optax.GradientTransformation:
    """The optimiser, followed by gradual magnitude pruning when `config.compress.sparsity` > 0.

    Every restore target must be built by this same function: the pruning masks live in the
    optimiser state, so the state's structure depends on the compress config.
    """
    tx = optimizer(config.optim, lr)
    pcfg = prune_config(config.compress, total_steps)
    return tx if pcfg is None else optax.chain(tx, prune(pcfg, total_steps))
