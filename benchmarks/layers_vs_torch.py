"""Where lcnn loses to PyTorch: every conv layer of a network timed alone in both frameworks.

Run:  .venv/bin/python benchmarks/layers_vs_torch.py mobilenet_v3_large --resolution 64 --batch 64 [--train]

Each distinct conv/dense layer shape of the network (lcnn's counter lists them) is timed alone:
lcnn's default formulation on NHWC (lcnn_jax.roofline.layer_times), and
torch.nn.functional.conv2d on NCHW (oneDNN), forward or forward+backward (input and kernel
gradients). Prints per-op totals and the layers with the largest deficit. Torch runs in a
subprocess so the two thread pools never compete.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from lcnn_jax.interop.timm import TIMM_COUNTERPARTS


def _layers(preset: str, resolution: int, batch: int):
    from lcnn_jax.count import count_spec
    from lcnn_jax.interop.timm import timm_spec

    spec = timm_spec(TIMM_COUNTERPARTS[preset]).replace(resolution=resolution)
    return spec, count_spec(spec, batch).layers


def _time_torch(layers, train: bool) -> list[float]:
    """Seconds per layer with torch (each distinct shape timed once)."""
    import torch

    from lcnn_jax.bench import time_steps

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    cache, out = {}, []
    for layer in layers:
        key = (layer.in_shape, layer.kernel_shape, layer.out_shape)
        if key not in cache:
            if layer.op == "dense":
                x = torch.randn(*layer.in_shape, requires_grad=train)
                w = torch.randn(*layer.kernel_shape, requires_grad=train)

                def f(x=x, w=w):
                    return x @ w
            else:
                n, h, wd, c = layer.in_shape
                k, _, cin, cout = layer.kernel_shape
                x = torch.randn(n, c, h, wd, requires_grad=train)
                w = torch.randn(cout, cin, k, k, requires_grad=train)

                def f(x=x, w=w, layer=layer, k=k):
                    return torch.nn.functional.conv2d(x, w, stride=layer.stride, padding=k // 2, groups=layer.groups)
            if train:
                g = torch.randn_like(f())

                def step(f=f, x=x, w=w, g=g):
                    x.grad = w.grad = None
                    f().backward(g)
            else:
                def step(f=f):
                    with torch.no_grad():
                        f()
            cache[key] = time_steps(lambda _, step=step: step(), None, 1, 5).p50_ms / 1e3
        out.append(cache[key])
    return out


def main(argv: list[str] | None = None) -> int:
    """Time every layer in both frameworks and print where lcnn is slower."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=list(TIMM_COUNTERPARTS))
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--train", action="store_true", help="forward+backward instead of forward")
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--worker", choices=("torch",), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    spec, layers = _layers(a.model, a.resolution, a.batch)
    if a.worker:
        print(json.dumps(_time_torch(layers, a.train)))
        return 0
    from lcnn_jax.roofline import layer_times

    torch_s = json.loads(subprocess.run(
        [sys.executable, __file__, a.model, "--resolution", str(a.resolution), "--batch", str(a.batch),
         *(["--train"] if a.train else []), "--worker", "torch"], capture_output=True, text=True, check=True
    ).stdout.strip().splitlines()[-1])
    lcnn_s = layer_times(layers, "fused", spec.stem.padding, a.train)
    lcnn_ms, torch_ms = [t * 1e3 for t in lcnn_s], [t * 1e3 for t in torch_s]
    totals = {}
    for layer, lt, tt in zip(layers, lcnn_ms, torch_ms):
        t = totals.setdefault(layer.op, [0.0, 0.0, 0])
        t[0], t[1], t[2] = t[0] + lt, t[1] + tt, t[2] + 1
    mode = "forward+backward" if a.train else "forward"
    print(f"{a.model} {a.resolution}px batch {a.batch}, {mode}, each layer alone (ms)")
    for op, (lt, tt, n) in totals.items():
        print(f"  {op:15s} x{n:3d}: lcnn {lt:8.1f}  torch {tt:8.1f}  ratio torch/lcnn {tt / lt:5.2f}")
    print(f"  {'all convs':15s}     : lcnn {sum(lcnn_ms):8.1f}  torch {sum(torch_ms):8.1f}")
    print("largest lcnn deficits:")
    for layer, lt, tt in sorted(zip(layers, lcnn_ms, torch_ms), key=lambda r: r[2] - r[1])[: a.top]:
        if lt > tt:
            print(f"  {layer.name:34s} {layer.op:15s} in {layer.in_shape} k {layer.kernel_shape}: lcnn {lt:6.2f} torch {tt:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
