"""Depthwise and pointwise conv: XLA conv op ('native') against lcnn's 'fused' formulation.

Run:  .venv/bin/python benchmarks/conv_formulations.py [--batch 64] [--size 56] [--channels 96] [--repeats 10]

Prints, per layer and formulation: compile time, median step time and GFLOP/s (analytic FLOPs
from lcnn's counter, 2 x MACs; backward counted as 2 x forward) for forward and forward+backward.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from lcnn_jax.bench import compile_and_time
from lcnn_jax.layers import conv2d
from lcnn_jax.tables import markdown_table


def bench_layer(name, x, w, stride, groups, repeats):
    """Rows for one layer under both formulations, forward and forward+backward."""
    out_elems = x.shape[0] * -(-x.shape[1] // stride) * -(-x.shape[2] // stride) * w.shape[-1]
    macs = out_elems * w.shape[0] * w.shape[1] * w.shape[2]
    rows = []
    for impl in ("native", "fused"):
        def fwd(x, w, impl=impl):
            return conv2d(x, w, stride, "same", groups, impl)

        def fwd_bwd(x, w, impl=impl):
            return jax.grad(lambda x, w: jnp.sum(fwd(x, w) ** 2), argnums=(0, 1))(x, w)

        for mode, fn, flops in (("forward", fwd, 2 * macs), ("forward+backward", fwd_bwd, 6 * macs)):
            compile_s, run_s = compile_and_time(fn, x, w, repeats=repeats)
            rows.append((name, impl, mode, f"{compile_s:.2f}", f"{run_s * 1e3:.2f}", f"{flops / run_s / 1e9:.2f}"))
    return rows


def main() -> None:
    """Run the benchmark and print a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--channels", type=int, default=96)
    p.add_argument("--repeats", type=int, default=10)
    a = p.parse_args()
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (a.batch, a.size, a.size, a.channels))
    rows = []
    for k, s in ((3, 1), (3, 2), (5, 1)):
        w = jax.random.normal(kw, (k, k, 1, a.channels))
        rows += bench_layer(f"depthwise {k}x{k} s{s}", x, w, s, a.channels, a.repeats)
    w = jax.random.normal(kw, (1, 1, a.channels, a.channels))
    rows += bench_layer("pointwise 1x1", x, w, 1, 1, a.repeats)
    print(f"input {x.shape}, backend {jax.default_backend()}, {jax.device_count()} device(s), jax {jax.__version__}")
    headers = ("layer", "impl", "mode", "compile s", "ms/step", "GFLOP/s")
    print(markdown_table(headers, rows, right=(False, False, False, True, True, True)))


if __name__ == "__main__":
    main()
