"""Timing of jitted functions and of whole networks: cold compile time, per-step p50/p90, img/s."""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np


def compile_and_times(fn, *args, repeats: int = 10) -> tuple[float, list[float]]:
    """(compile seconds, seconds of each of `repeats` calls) of `jax.jit(fn)` on `args`, after one warm-up."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    return compile_s, list(time_steps(lambda _: compiled(*args), None, 1, repeats).seconds)


def compile_and_time(fn, *args, repeats: int = 10) -> tuple[float, float]:
    """(compile seconds, median seconds per call) of `jax.jit(fn)` on `args`, after one warm-up."""
    compile_s, runs = compile_and_times(fn, *args, repeats=repeats)
    return compile_s, statistics.median(runs)


def percentile(values: list[float], q: float) -> float:
    """The `q`-th percentile (0-100) by linear interpolation, as numpy computes it."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@dataclasses.dataclass(frozen=True)
class StepTiming:
    """How fast one step function runs: cold compile, then `len(seconds)` timed steps."""

    batch: int
    compile_s: float
    seconds: tuple[float, ...]
    first_s: float = 0.0  # the first (warm-up) call: PyTorch's one-off set-up lands here

    @property
    def p50_ms(self) -> float:
        """Median step time in milliseconds."""
        return percentile(self.seconds, 50) * 1e3

    @property
    def p90_ms(self) -> float:
        """90th-percentile step time in milliseconds."""
        return percentile(self.seconds, 90) * 1e3

    @property
    def img_per_s(self) -> float:
        """Images per second at the median step time."""
        return self.batch / (self.p50_ms / 1e3)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures (the raw step times are left out)."""
        return dict(batch=self.batch, compile_s=self.compile_s, p50_ms=self.p50_ms, p90_ms=self.p90_ms,
                    img_per_s=self.img_per_s, steps=len(self.seconds))


def time_steps(step: Callable, carry, batch: int, steps: int | None, warmup: int = 1, budget_s: float = 5.0) -> StepTiming:
    """Time `carry = step(carry)` (already compiled): `warmup` untimed calls, then `steps` timed ones.

    `steps=None` picks as many as fit in about `budget_s` seconds (3 to 30), from the warm-up's time.
    Works for any framework: outputs without `block_until_ready` (torch on CPU) are synchronous.
    """
    t0 = time.perf_counter()
    carry = jax.block_until_ready(step(carry))
    first_s = time.perf_counter() - t0
    for _ in range(max(1, warmup) - 1):
        carry = jax.block_until_ready(step(carry))
    if steps is None:
        per_step = (time.perf_counter() - t0) / max(1, warmup)
        steps = int(min(30, max(3, budget_s / max(per_step, 1e-6))))
    seconds = []
    for _ in range(max(1, steps)):
        t0 = time.perf_counter()
        carry = jax.block_until_ready(step(carry))
        seconds.append(time.perf_counter() - t0)
    return StepTiming(batch=batch, compile_s=0.0, seconds=tuple(seconds), first_s=first_s)


def bench_spec(spec, batch: int, train: bool, *, impl: str = "auto", steps: int | None = 10, seed: int = 0) -> StepTiming:
    """Compile and time one lcnn train step (forward, backward, SGD+momentum, EMA) or one inference pass.

    The train step is the one `lcnn train` runs (`make_train_step`), on random images, with the
    state donated as in training. Inference is the eval-mode forward pass (BN running stats).
    """
    import optax

    from lcnn_jax.net import Net, init_variables
    from lcnn_jax.train.state import create_state
    from lcnn_jax.train.steps import make_train_step

    model = Net(spec, impl=impl)
    variables = init_variables(model, spec.resolution, spec.in_channels, seed=seed)
    kx, ky = jax.random.split(jax.random.key(seed + 1))
    images = jax.random.normal(kx, (batch, spec.resolution, spec.resolution, spec.in_channels), jnp.float32)
    if train:
        tx = optax.sgd(0.01, momentum=0.9)
        step_fn = make_train_step(model, tx, label_smoothing=0.0, ema_decay=0.9999, precision="float32")
        data = {"image": images, "label": jax.random.randint(ky, (batch,), 0, spec.num_classes)}
        state = create_state(variables, tx, jax.random.key(seed))
        t0 = time.perf_counter()
        compiled = jax.jit(step_fn, donate_argnums=0).lower(state, data).compile()
        compile_s = time.perf_counter() - t0
        timing = time_steps(lambda s: compiled(s, data)[0], state, batch, steps)
    else:
        t0 = time.perf_counter()
        compiled = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, images).compile()
        compile_s = time.perf_counter() - t0
        # The carry is the last output, so each timed call blocks on its own logits.
        timing = time_steps(lambda _: compiled(variables, images), None, batch, steps)
    return dataclasses.replace(timing, compile_s=compile_s)
