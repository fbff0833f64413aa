"""Where lcnn loses to PyTorch: every conv layer of a network timed alone in both frameworks.

Run:  .venv/bin/python benchmarks/layers_vs_torch.py mobilenet_v3_large --resolution 64 --batch 64 [--train]

Each distinct conv/dense layer shape of the network (lcnn's counter lists them) is timed alone:
lcnn's default formulation on NHWC, and torch.nn.functional.conv2d on NCHW (oneDNN), forward or
forward+backward (input and kernel gradients). Prints per-op totals, the whole-network step time
of both (the remainder is BN, activations, SE and adds), and the layers with the largest deficit.
Torch runs in a subprocess so the two thread pools never compete.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

MODELS = {"mobilenet_v2": "mobilenetv2_100", "mobilenet_v3_large": "mobilenetv3_large_100", "efficientnet_b0": "efficientnet_b0"}


def _shapes(preset: str, resolution: int, batch: int) -> list[dict]:
    from lcnn_jax.count import count_spec
    from lcnn_jax.interop.timm import timm_spec

    spec = timm_spec(MODELS[preset]).replace(resolution=resolution)
    return [dict(name=r.name, op=r.op, in_shape=r.in_shape, kernel_shape=r.kernel_shape, out_shape=r.out_shape)
            for r in count_spec(spec, batch).layers]


def _median_ms(fn, repeats: int = 5) -> float:
    from lcnn_jax.bench import time_steps

    return time_steps(lambda _: fn(), None, 1, repeats).p50_ms


def _time_lcnn(layers: list[dict], train: bool) -> list[float]:
    import jax
    import jax.numpy as jnp

    from lcnn_jax.convs import conv2d, resolve_impl

    impl, cache, out = resolve_impl("auto"), {}, []
    for layer in layers:
        key = json.dumps([layer["in_shape"], layer["kernel_shape"], layer["out_shape"]])
        if key not in cache:
            x = jax.random.normal(jax.random.key(0), layer["in_shape"])
            w = jax.random.normal(jax.random.key(1), layer["kernel_shape"])
            if layer["op"] == "dense":
                f = jnp.matmul
            else:
                stride = max(1, round(layer["in_shape"][1] / layer["out_shape"][1]))
                groups = layer["in_shape"][3] // layer["kernel_shape"][2]

                def f(x, w, stride=stride, groups=groups):
                    return conv2d(x, w, stride, "symmetric", groups, impl)
            if train:
                g = jax.random.normal(jax.random.key(2), layer["out_shape"])
                fn = jax.jit(lambda x, w, g, f=f: jax.vjp(f, x, w)[1](g))
                cache[key] = _median_ms(lambda: jax.block_until_ready(fn(x, w, g)))
            else:
                fn = jax.jit(f)
                cache[key] = _median_ms(lambda: jax.block_until_ready(fn(x, w)))
        out.append(cache[key])
    return out


def _time_torch(layers: list[dict], train: bool) -> list[float]:
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    cache, out = {}, []
    for layer in layers:
        key = json.dumps([layer["in_shape"], layer["kernel_shape"], layer["out_shape"]])
        if key not in cache:
            if layer["op"] == "dense":
                x = torch.randn(*layer["in_shape"], requires_grad=train)
                w = torch.randn(*layer["kernel_shape"], requires_grad=train)

                def f(x=x, w=w):
                    return x @ w
            else:
                n, h, wd, c = layer["in_shape"]
                k, _, cin, cout = layer["kernel_shape"]
                stride = max(1, round(h / layer["out_shape"][1]))
                x = torch.randn(n, c, h, wd, requires_grad=train)
                w = torch.randn(cout, cin, k, k, requires_grad=train)

                def f(x=x, w=w, stride=stride, k=k, groups=c // cin):
                    return torch.nn.functional.conv2d(x, w, stride=stride, padding=k // 2, groups=groups)
            if train:
                g = torch.randn_like(f())

                def step(f=f, x=x, w=w, g=g):
                    x.grad = w.grad = None
                    f().backward(g)
                cache[key] = _median_ms(step)
            else:
                def step(f=f):
                    with torch.no_grad():
                        f()
                cache[key] = _median_ms(step)
        out.append(cache[key])
    return out


def main(argv: list[str] | None = None) -> int:
    """Time every layer in both frameworks and print where lcnn is slower."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=list(MODELS))
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--train", action="store_true", help="forward+backward instead of forward")
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--worker", choices=("torch",), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    layers = _shapes(a.model, a.resolution, a.batch)
    if a.worker:
        print(json.dumps(_time_torch(layers, a.train)))
        return 0
    torch_ms = json.loads(subprocess.run(
        [sys.executable, __file__, a.model, "--resolution", str(a.resolution), "--batch", str(a.batch),
         *(["--train"] if a.train else []), "--worker", "torch"], capture_output=True, text=True, check=True
    ).stdout.strip().splitlines()[-1])
    lcnn_ms = _time_lcnn(layers, a.train)
    totals = {}
    for layer, lt, tt in zip(layers, lcnn_ms, torch_ms):
        t = totals.setdefault(layer["op"], [0.0, 0.0, 0])
        t[0], t[1], t[2] = t[0] + lt, t[1] + tt, t[2] + 1
    mode = "forward+backward" if a.train else "forward"
    print(f"{a.model} {a.resolution}px batch {a.batch}, {mode}, each layer alone (ms)")
    for op, (lt, tt, n) in totals.items():
        print(f"  {op:15s} x{n:3d}: lcnn {lt:8.1f}  torch {tt:8.1f}  ratio torch/lcnn {tt / lt:5.2f}")
    print(f"  {'all convs':15s}     : lcnn {sum(lcnn_ms):8.1f}  torch {sum(torch_ms):8.1f}")
    worst = sorted(zip(layers, lcnn_ms, torch_ms), key=lambda r: r[2] - r[1])[: a.top]
    print("largest lcnn deficits:")
    for layer, lt, tt in worst:
        if lt > tt:
            print(f"  {layer['name']:34s} {layer['op']:15s} in {tuple(layer['in_shape'])} k {tuple(layer['kernel_shape'])}: "
                  f"lcnn {lt:6.2f} torch {tt:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
