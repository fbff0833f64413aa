"""Depthwise and pointwise conv formulations (lcnn_jax.convs), and PyTorch's, on one layer shape.

Run:  .venv/bin/python benchmarks/conv_formulations.py [--batch 64] [--size 56] [--channels 96] [--repeats 10] [--torch]

Formulations: 'native' (XLA's conv op, NHWC; feature_group_count for depthwise), 'native-nchw'
(the same op in NCHW layout: the layout experiment), 'shifted' (k*k shifted multiply-adds and a
channel dot, autodiff gradients) and 'fused' (shifted, with lcnn's hand-written VJPs). `--torch`
adds torch.nn.Conv2d (NCHW, oneDNN) with as many threads as the process may use. Prints, per
layer and formulation: compile time, median step time and GFLOP/s (2 x MACs forward; backward
counted as 2 x forward) for forward and forward+backward (input and kernel gradients).
"""

from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
from jax import lax

from lcnn_jax.bench import compile_and_time, time_steps
from lcnn_jax.convs import conv2d, spatial_pads
from lcnn_jax.tables import markdown_table


def _nchw(x, w, stride, groups):
    """The conv op in NCHW/OIHW layout (operands transposed outside the timed function)."""
    pads = spatial_pads(jnp.moveaxis(x, 1, 3), w.shape[2], stride, "same")
    return lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                    feature_group_count=groups)


def bench_layer(name, x, w, stride, groups, repeats):
    """Rows for one layer under every formulation, forward and forward+backward."""
    out_elems = x.shape[0] * -(-x.shape[1] // stride) * -(-x.shape[2] // stride) * w.shape[-1]
    macs = out_elems * w.shape[0] * w.shape[1] * w.shape[2]
    rows = []
    for impl in ("native", "native-nchw", "shifted", "fused"):
        if impl == "native-nchw":
            args = (jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(w, (3, 2, 0, 1)))

            def fwd(x, w):
                return _nchw(x, w, stride, groups)
        else:
            args = (x, w)

            def fwd(x, w, impl=impl):
                return conv2d(x, w, stride, "same", groups, impl)

        def fwd_bwd(x, w, impl=impl):
            return jax.grad(lambda x, w: jnp.sum(fwd(x, w) ** 2), argnums=(0, 1))(x, w)

        for mode, fn, flops in (("forward", fwd, 2 * macs), ("forward+backward", fwd_bwd, 6 * macs)):
            compile_s, run_s = compile_and_time(fn, *args, repeats=repeats)
            rows.append((name, impl, mode, f"{compile_s:.2f}", f"{run_s * 1e3:.2f}", f"{flops / run_s / 1e9:.2f}"))
    return rows


def torch_rows(name, x, w, stride, groups, repeats):
    """torch.nn.functional.conv2d (NCHW, oneDNN) on the same layer: forward and forward+backward."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    k = w.shape[0]
    xt = torch.randn(x.shape[0], x.shape[3], x.shape[1], x.shape[2], requires_grad=True)
    wt = torch.randn(w.shape[3], w.shape[2], k, k, requires_grad=True)
    macs = x.shape[0] * -(-x.shape[1] // stride) * -(-x.shape[2] // stride) * w.shape[3] * k * k * w.shape[2]

    def fwd():
        with torch.no_grad():
            torch.nn.functional.conv2d(xt, wt, stride=stride, padding=k // 2, groups=groups)

    def fwd_bwd():
        xt.grad = wt.grad = None
        (torch.nn.functional.conv2d(xt, wt, stride=stride, padding=k // 2, groups=groups) ** 2).sum().backward()

    rows = []
    for mode, fn, flops in (("forward", fwd, 2 * macs), ("forward+backward", fwd_bwd, 6 * macs)):
        timing = time_steps(lambda _, fn=fn: fn(), None, 1, repeats)
        run_s = timing.p50_ms / 1e3
        rows.append((name, "torch", mode, f"{timing.first_s:.2f}", f"{run_s * 1e3:.2f}", f"{flops / run_s / 1e9:.2f}"))
    return rows


def main() -> None:
    """Run the benchmark and print a markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=56)
    p.add_argument("--channels", type=int, default=96)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--torch", action="store_true", help="also time torch.nn.functional.conv2d (needs the [torch] extra)")
    a = p.parse_args()
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (a.batch, a.size, a.size, a.channels))
    rows = []
    for k, s in ((3, 1), (3, 2), (5, 1)):
        w = jax.random.normal(kw, (k, k, 1, a.channels))
        rows += bench_layer(f"depthwise {k}x{k} s{s}", x, w, s, a.channels, a.repeats)
        if a.torch:
            rows += torch_rows(f"depthwise {k}x{k} s{s}", x, w, s, a.channels, a.repeats)
    w = jax.random.normal(kw, (1, 1, a.channels, a.channels))
    rows += bench_layer("pointwise 1x1", x, w, 1, 1, a.repeats)
    if a.torch:
        rows += torch_rows("pointwise 1x1", x, w, 1, 1, a.repeats)
    print(f"input {x.shape}, backend {jax.default_backend()}, {jax.device_count()} device(s), jax {jax.__version__}")
    headers = ("layer", "impl", "mode", "compile s", "ms/step", "GFLOP/s")
    print(markdown_table(headers, rows, right=(False, False, False, True, True, True)))


if __name__ == "__main__":
    main()
