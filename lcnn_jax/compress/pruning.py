"""Gradual magnitude pruning as an optax transformation, with the masks in the optimiser state.

- Schedule (Zhu & Gupta 2017): s_t = s_f * (1 - (1 - p)^3), p the progress from
  `start_fraction` to `end_fraction` of training; masks are recomputed every `update_every` steps
  inside that window (and once more at its end, so the target is reached), then frozen.
- Distribution: "uniform" gives every prunable kernel the target sparsity; "erk"
  (Erdos-Renyi-Kernel, RigL/jaxpruner) gives each a density proportional to sum(shape) /
  prod(shape), capping layers at density 1 until the prunable set's sparsity is the target.
- Prunable: leaves named "kernel" with >= 2 dims and >= `min_size` elements. BN scales/biases and
  biases never are. Depthwise kernels (k, k, 1, C) stay dense unless `prune_depthwise`: they are
  a small share of the weights (1% in MobileNetV1, Howard et al. 2017) with only k*k weights per
  output, so pruning them saves little and costs accuracy. A one-channel stem has the same shape;
  keeping the first layer dense is the usual choice anyway.
- Structured: whole output channels (the last kernel axis) go, ranked by their filters' L2 norm.
  The following BN still adds its bias, so only this layer's MACs drop, not the next layer's.
- Masks only shrink: weights pruned once stay exactly zero. The transform zeroes the updates of
  pruned weights and, when it prunes more, returns -param for them so `optax.apply_updates`
  writes exact zeros. It must run after the optimiser, ``optax.chain(base_tx, prune(...))``:
  momentum (and Adam's moments) keep a velocity for pruned weights, so masking the gradients
  before the optimiser would let that velocity move them off zero again.

Integration: build ``tx = optax.chain(optimizer(cfg.optim, lr), prune(prune_cfg, total_steps))``
(the update needs `params`, which train_step already passes); the masks are then part of
`TrainState.opt_state`, so orbax checkpoints them, and every restore target (the eval-only
restore in loop.py too) must be built with the same chain. The EMA of pruned weights only decays
towards zero: evaluate/export `apply_masks(ema_params, find_prune_state(opt_state).masks)`.
Report `sparsity_report(params, prune_cfg)["global"]` (the prunable set) and
`effective_counts(spec, params).as_dict()` (params, effective_params, macs, effective_macs).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lcnn_jax.count import Counts, count_spec
from lcnn_jax.errors import ConfigError, unknown_choice
from lcnn_jax.layers import is_kernel
from lcnn_jax.spec import NetSpec

DISTRIBUTIONS = ("uniform", "erk")


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    """Target sparsity, how it is spread over layers, and when it is reached."""

    sparsity: float = 0.0  # fraction of prunable weights that are zero at the end, in [0, 1)
    distribution: str = "uniform"  # uniform | erk
    start_fraction: float = 0.1  # of training, where the ramp starts (dense before)
    end_fraction: float = 0.75  # where the target is reached; masks are fixed afterwards
    update_every: int = 100  # steps between mask updates inside the ramp
    structured: bool = False  # prune whole output channels instead of single weights
    min_size: int = 512  # smaller kernels stay dense (e.g. an RGB stem, a tiny SE conv)
    prune_depthwise: bool = False

    def __post_init__(self):
        if not 0.0 <= self.sparsity < 1.0:
            raise ConfigError(f"sparsity must be in [0, 1), got {self.sparsity}")
        if self.distribution not in DISTRIBUTIONS:
            raise unknown_choice("sparsity distribution", self.distribution, DISTRIBUTIONS)
        if not 0.0 <= self.start_fraction <= self.end_fraction <= 1.0:
            raise ConfigError(
                "pruning needs 0 <= start_fraction <= end_fraction <= 1, "
                f"got start_fraction={self.start_fraction}, end_fraction={self.end_fraction}"
            )
        if self.update_every < 1:
            raise ConfigError(f"update_every must be >= 1 step, got {self.update_every}")
        if self.min_size < 0:
            raise ConfigError(f"min_size must be >= 0, got {self.min_size}")


def _key(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _path(path) -> str:
    return "/".join(_key(k) for k in path)


def _is_depthwise(shape: tuple[int, ...]) -> bool:
    return len(shape) == 4 and shape[2] == 1


def _prunable(params, cfg: PruneConfig) -> dict[str, tuple[int, ...]]:
    """{leaf path: shape} of the kernels `cfg` allows to prune."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        shape = tuple(jnp.shape(leaf))
        if not is_kernel(path, leaf) or math.prod(shape) < cfg.min_size:
            continue
        if _is_depthwise(shape) and not cfg.prune_depthwise:
            continue
        out[_path(path)] = shape
    return out


def _erk(shapes: dict[str, tuple[int, ...]], sparsity: float) -> dict[str, float]:
    sizes = {p: math.prod(s) for p, s in shapes.items()}
    raw = {p: sum(s) / sizes[p] for p, s in shapes.items()}
    total = sum(sizes.values())
    dense: set[str] = set()
    while True:
        free = [p for p in shapes if p not in dense]
        eps = ((1.0 - sparsity) * total - sum(sizes[p] for p in dense)) / sum(raw[p] * sizes[p] for p in free)
        over = [p for p in free if eps * raw[p] > 1.0]
        if not over:
            break
        # Cap only the densest: each capped layer lowers eps, which may bring the others under 1.
        top = max(raw[p] for p in over)
        dense.update(p for p in over if raw[p] == top)
    return {p: 0.0 if p in dense else max(0.0, 1.0 - eps * raw[p]) for p in shapes}


def layer_sparsities(params, cfg: PruneConfig) -> dict[str, float]:
    """Target sparsity of each prunable kernel (by leaf path); shapes only, so abstract params work."""
    shapes = _prunable(params, cfg)
    if not shapes or cfg.sparsity == 0.0:
        return {p: 0.0 for p in shapes}
    if cfg.distribution == "uniform":
        return {p: cfg.sparsity for p in shapes}
    return _erk(shapes, cfg.sparsity)


def _keep_top(scores: jax.Array, n_pruned: jax.Array) -> jax.Array:
    """True for all but the `n_pruned` lowest of 1-D `scores` (a traced count is fine)."""
    order = jnp.argsort(scores, stable=True)
    ranks = jnp.zeros(scores.shape, jnp.int32).at[order].set(jnp.arange(scores.size, dtype=jnp.int32))
    return ranks >= n_pruned


def _layer_mask(w: jax.Array, sparsity, structured: bool, prior: jax.Array | None) -> jax.Array:
    """Keep-mask of one kernel at `sparsity`; entries False in `prior` are ranked lowest and stay off."""
    w = jnp.asarray(w, jnp.float32)
    if structured:
        channels = w.reshape(-1, w.shape[-1])
        scores = jnp.sqrt(jnp.sum(jnp.square(channels), axis=0))
        alive = None if prior is None else jnp.any(prior.reshape(-1, w.shape[-1]), axis=0)
    else:
        scores = jnp.abs(w).ravel()
        alive = None if prior is None else prior.ravel()
    if alive is not None:
        scores = jnp.where(alive, scores, -1.0)
    n_pruned = jnp.round(jnp.asarray(sparsity, jnp.float32) * scores.size).astype(jnp.int32)
    keep = _keep_top(scores, n_pruned)
    if alive is not None:
        keep = keep & alive
    return jnp.broadcast_to(keep, w.shape) if structured else keep.reshape(w.shape)


def _masks(params, sparsities: dict[str, Any], structured: bool, prior=None):
    def leaf(path, p, m):
        s = sparsities.get(_path(path))
        if s is None:
            return jnp.ones(jnp.shape(p), bool) if m is None else m
        return _layer_mask(p, s, structured, m)

    if prior is None:
        return jax.tree_util.tree_map_with_path(lambda path, p: leaf(path, p, None), params)
    return jax.tree_util.tree_map_with_path(leaf, params, prior)


# Jitted because op-by-op dispatch compiles each kernel shape's sort and scatter separately:
# ~9 s for a small MobileNetV3 on CPU eagerly.
_masks_jit = jax.jit(_masks, static_argnames="structured")


def magnitude_masks(params, sparsities: dict[str, float], structured: bool = False):
    """Bool keep-masks shaped like `params`: each listed kernel loses its smallest weights (or channels)."""
    return _masks_jit(params, {k: float(v) for k, v in sparsities.items()}, structured=structured)


@jax.jit
def apply_masks(params, masks):
    """`params` with every masked-out entry set to exactly zero."""
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params, masks)


def _window(cfg: PruneConfig, total_steps: int) -> tuple[int, int]:
    if total_steps < 1:
        raise ConfigError(f"pruning needs total_steps >= 1, got {total_steps}")
    return int(round(cfg.start_fraction * total_steps)), int(round(cfg.end_fraction * total_steps))


def sparsity_schedule(cfg: PruneConfig, total_steps: int) -> Callable[[Any], jax.Array]:
    """Global target sparsity after `step` updates: 0 until the window, cubic ramp, then `cfg.sparsity`."""
    begin, end = _window(cfg, total_steps)

    def schedule(step) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        if end > begin:
            progress = jnp.clip((step - begin) / (end - begin), 0.0, 1.0)
        else:  # one-shot pruning at `begin`
            progress = jnp.where(step >= begin, 1.0, 0.0)
        return cfg.sparsity * (1.0 - (1.0 - progress) ** 3)

    return schedule


class PruneState(NamedTuple):
    """Updates applied so far, and the keep-masks (bool, shaped like the params)."""

    count: jax.Array
    masks: Any


def prune(cfg: PruneConfig, total_steps: int) -> optax.GradientTransformation:
    """Gradual magnitude pruning; chain it after the optimiser (see module doc). Needs `params` in update."""
    schedule = sparsity_schedule(cfg, total_steps)
    begin, end = _window(cfg, total_steps)
    last = max(end, 1)  # counts start at 1 after the first update: a window ending at 0 prunes then

    def init(params) -> PruneState:
        return PruneState(jnp.zeros((), jnp.int32), jax.tree.map(lambda p: jnp.ones(jnp.shape(p), bool), params))

    def update(updates, state: PruneState, params=None):
        if params is None:
            raise ValueError("prune() needs the params: call tx.update(grads, opt_state, params)")
        targets = layer_sparsities(params, cfg)  # from shapes: static under jit
        count = state.count + 1
        masks = state.masks
        if cfg.sparsity > 0 and targets:
            in_ramp = (count >= begin) & (count <= end) & ((count - begin) % cfg.update_every == 0)
            fraction = schedule(count) / cfg.sparsity

            def recompute(prior):
                # Rank on the weights this step would produce, so the freshest magnitudes decide.
                stepped = jax.tree.map(lambda p, u, m: jnp.where(m, p + u, 0.0), params, updates, prior)
                return _masks(stepped, {k: s * fraction for k, s in targets.items()}, cfg.structured, prior)

            masks = jax.lax.cond(in_ramp | (count == last), recompute, lambda prior: prior, masks)
        # -p on masked entries: p + (-p) is exactly 0, also for weights pruned just now.
        new_updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p).astype(u.dtype), updates, params, masks)
        return new_updates, PruneState(count, masks)

    return optax.GradientTransformation(init, update)


def find_prune_state(opt_state) -> PruneState | None:
    """The PruneState inside a (chained, nested) optimiser state, or None."""
    if isinstance(opt_state, PruneState):
        return opt_state
    children = opt_state.values() if isinstance(opt_state, dict) else opt_state
    if isinstance(opt_state, (tuple, list, dict)):
        for child in children:
            found = find_prune_state(child)
            if found is not None:
                return found
    return None


def _kernels(params, cfg: PruneConfig | None) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    if cfg is None:
        return {_path(path): np.asarray(leaf) for path, leaf in leaves if is_kernel(path, leaf)}
    wanted = _prunable(params, cfg)
    return {_path(path): np.asarray(leaf) for path, leaf in leaves if _path(path) in wanted}


def sparsity_report(params, cfg: PruneConfig | None = None) -> dict[str, Any]:
    """Fraction of exact zeros per kernel and over all of them (the prunable ones when `cfg` is given)."""
    kernels = _kernels(params, cfg)
    zeros = {p: int(k.size - np.count_nonzero(k)) for p, k in kernels.items()}
    total = sum(k.size for k in kernels.values())
    return {
        "layers": {p: zeros[p] / kernels[p].size for p in kernels},
        "global": sum(zeros.values()) / total if total else 0.0,
        "zeros": sum(zeros.values()),
        "total": int(total),
    }


@dataclasses.dataclass(frozen=True)
class EffectiveCounts:
    """Dense params and MACs next to those of the non-zero weights only."""

    params: int
    effective_params: int
    macs: int
    effective_macs: int
    unmatched: tuple[str, ...] = ()  # count rows with no kernel in the params (counted dense)

    def as_dict(self) -> dict[str, int]:
        """JSON-ready totals."""
        return dict(params=self.params, effective_params=self.effective_params, macs=self.macs,
                    effective_macs=self.effective_macs)


def _lookup_kernel(params, name: str):
    node = params
    for part in name.split("#")[0].split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node.get("kernel") if isinstance(node, dict) else None


def effective_counts(spec_or_counts: NetSpec | Counts, params) -> EffectiveCounts:
    """Each conv/dense layer's MACs scaled by its kernel's density; params less the zero kernel weights.

    Biases and BN params always count as dense: zero-initialised biases are not pruned weights.
    """
    counts = count_spec(spec_or_counts) if isinstance(spec_or_counts, NetSpec) else spec_or_counts
    sizes = [int(np.size(leaf)) for leaf in jax.tree.leaves(params)]
    zero_weights = sum(k.size - np.count_nonzero(k) for k in _kernels(params, None).values())
    effective_macs, unmatched = 0.0, []
    for row in counts.layers:
        kernel = _lookup_kernel(params, row.name)
        if kernel is None:
            unmatched.append(row.name)
            effective_macs += row.macs
            continue
        kernel = np.asarray(kernel)
        effective_macs += row.macs * np.count_nonzero(kernel) / kernel.size
    return EffectiveCounts(
        params=sum(sizes), effective_params=int(sum(sizes) - zero_weights), macs=int(counts.macs),
        effective_macs=int(round(effective_macs)), unmatched=tuple(unmatched),
    )
