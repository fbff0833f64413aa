"""Roofline model of this machine: peak matmul rate, memory bandwidth, and where each layer sits.

A layer moving `bytes` and doing `flops` can run no faster than min(peak, intensity * bandwidth)
with intensity = flops / bytes; below the ridge intensity (peak / bandwidth) it is memory-bound.
Bytes are the layer's minimum traffic (weights + input + output, lcnn_jax.count); real traffic is
higher, so "memory-bound" here is a lower bound on how memory-bound a layer is.
"""

from __future__ import annotations

import dataclasses
import statistics

import jax
import jax.numpy as jnp

from lcnn_jax.bench import compile_and_times


@dataclasses.dataclass(frozen=True)
class Machine:
    """Measured ceilings: float32 matmul FLOP/s and streaming memory bandwidth (bytes/s)."""

    peak_flops: float
    bandwidth: float

    @property
    def ridge(self) -> float:
        """Intensity (FLOP/byte) where the memory roof meets the compute roof."""
        return self.peak_flops / self.bandwidth

    def attainable(self, intensity: float) -> float:
        """The roofline: the highest FLOP/s a kernel of this intensity can reach."""
        return min(self.peak_flops, intensity * self.bandwidth)

    def bound(self, intensity: float) -> str:
        """'memory' below the ridge, 'compute' at or above it."""
        return "memory" if intensity < self.ridge else "compute"


def peak_matmul_flops(n: int = 2048, repeats: int = 10) -> float:
    """Best float32 n x n matmul rate in FLOP/s (XLA's dot, all threads)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    _, runs = compile_and_times(jnp.matmul, a, b, repeats=repeats)
    return 2.0 * n**3 / min(runs)


def memory_bandwidth(mbytes: int = 512, repeats: int = 10) -> float:
    """Streaming bandwidth in bytes/s: a fused scale-and-add over a `mbytes` MB array (read + write)."""
    x = jnp.ones((mbytes * 2**20 // 4,), jnp.float32)
    _, runs = compile_and_times(lambda v: v * 1.5 + 1.0, x, repeats=repeats)
    return 2.0 * x.nbytes / statistics.median(runs)


def measure_machine() -> Machine:
    """Measure both ceilings once (about 10 s)."""
    return Machine(peak_flops=peak_matmul_flops(), bandwidth=memory_bandwidth())


def layer_times(layers, impl: str, padding: str, train: bool = False, progress: str | None = None) -> list[float]:
    """`layer_seconds` of every layer, each distinct shape timed once (repeated blocks share shapes)."""
    from tqdm import tqdm

    seen: dict[tuple, float] = {}
    out = []
    for layer in tqdm(layers, desc=progress, unit="layer", disable=progress is None):
        key = (layer.in_shape, layer.kernel_shape, layer.out_shape)
        if key not in seen:
            seen[key] = layer_seconds(layer, impl, padding, train)
        out.append(seen[key])
    return out


def layer_seconds(layer, impl: str, padding: str, train: bool = False, repeats: int = 5) -> float:
    """Median time of one counted layer (lcnn_jax.count.LayerCount) run alone: forward, or with
    `train` forward plus the input and kernel gradients for a random output cotangent."""
    from lcnn_jax.convs import conv2d

    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], layer.in_shape, jnp.float32)
    w = jax.random.normal(keys[1], layer.kernel_shape, jnp.float32)
    if layer.op == "dense":
        fn = jnp.matmul
    else:
        def fn(x, w):
            return conv2d(x, w, layer.stride, padding, layer.groups, impl)
    if train:
        g = jax.random.normal(keys[2], layer.out_shape, jnp.float32)
        _, runs = compile_and_times(lambda x, w, g: jax.vjp(fn, x, w)[1](g), x, w, g, repeats=repeats)
    else:
        _, runs = compile_and_times(fn, x, w, repeats=repeats)
    return statistics.median(runs)
