"""Compile and step time of small presets: parameter init, forward, and training gradient.

Run:  .venv/bin/python benchmarks/compile_time.py

For init it compares lcnn's host (numpy) initialisers with the same distributions drawn by
jax.random inside the compiled program; for forward and gradient, the 'fused' and 'native'
conv formulations. Each row is a fresh process-level jit, so compile times are cold.
"""

from __future__ import annotations

from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp

import lcnn_jax.layers
import lcnn_jax.net
from lcnn_jax.bench import compile_and_time
from lcnn_jax.net import Net
from lcnn_jax.presets import get_spec
from lcnn_jax.tables import markdown_table

CASES = (
    ("mobilenet_v3_small", dict(width=0.35, resolution=32), 64),
    ("mobilenet_v2", dict(width=0.5, resolution=64), 64),
    ("efficientnet_b0", dict(resolution=64), 32),
)


def init_rows(name, spec):
    """Init compile time with host initialisers vs jax.random initialisers."""
    x = jax.ShapeDtypeStruct((1, spec.resolution, spec.resolution, 3), jnp.float32)
    rows = []
    for label, patch in (("host numpy (lcnn)", None), ("jax.random in-graph", nn.initializers.variance_scaling)):
        patches = [mock.patch.object(m, "host_variance_scaling", patch) for m in (lcnn_jax.layers, lcnn_jax.net)] if patch else []
        for p in patches:
            p.start()
        try:
            model = Net(spec)
            c, r = compile_and_time(lambda key: model.lazy_init(key, x), jax.random.key(0), repeats=1)
        finally:
            for p in patches:
                p.stop()
        rows.append((name, "init", label, f"{c:.2f}", f"{r * 1e3:.1f}"))
    return rows


def step_rows(name, spec, batch):
    """Forward and gradient compile/step time for both conv formulations."""
    x = jax.random.normal(jax.random.key(1), (batch, spec.resolution, spec.resolution, 3))
    rows = []
    for impl in ("fused", "native"):
        model = Net(spec, impl=impl)
        variables = jax.jit(lambda k: model.lazy_init(k, x))(jax.random.key(0))

        def loss(params):
            out, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
            return jnp.mean(out**2)

        c, r = compile_and_time(lambda v, x: model.apply(v, x), variables, x)
        rows.append((name, f"forward b{batch}", impl, f"{c:.2f}", f"{r * 1e3:.1f}"))
        c, r = compile_and_time(jax.grad(loss), variables["params"])
        rows.append((name, f"gradient b{batch}", impl, f"{c:.2f}", f"{r * 1e3:.1f}"))
    return rows


def main() -> None:
    """Run every case and print a markdown table."""
    rows = []
    for name, kw, batch in CASES:
        spec = get_spec(name, num_classes=10, dropout=0.0, stochastic_depth=0.0, **kw)
        tag = f"{name} w={spec.width:g} r={spec.resolution}"
        rows += init_rows(tag, spec)
        rows += step_rows(tag, spec, batch)
    print(f"backend {jax.default_backend()}, jax {jax.__version__}")
    print(markdown_table(("model", "what", "variant", "compile s", "ms/step"), rows, right=(False,) * 3 + (True,) * 2))


if __name__ == "__main__":
    main()
