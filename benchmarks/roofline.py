"""Roofline of this machine and of each benchmark model: achieved FLOP/s per network and per layer.

Run:  .venv/bin/python benchmarks/roofline.py      (~6 min on 2 cores; writes docs/roofline.md, docs/roofline.png)

Measures the peak float32 matmul rate and the streaming memory bandwidth once, then, for
MobileNetV2, MobileNetV3-Large and EfficientNet-B0 at 224 px and batch 32: whole-network
achieved FLOP/s (inference, and train steps counted as 3x the forward FLOPs), and a per-layer
table of MACs, minimum bytes moved, arithmetic intensity, the layer's forward time run alone
(lcnn's default 'fused' formulation), achieved GFLOP/s, the share of its roofline reached, and
whether it is memory- or compute-bound. Whole-network times come from
benchmarks/results/vs_timm.json when that holds the 224 px rows, else they are measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from lcnn_jax.atomic import write_text_atomic
from lcnn_jax.bench import bench_spec
from lcnn_jax.count import count_spec
from lcnn_jax.interop.timm import TIMM_COUNTERPARTS, timm_spec
from lcnn_jax.plots import pyplot
from lcnn_jax.roofline import layer_times, measure_machine
from lcnn_jax.tables import markdown_table

ROOT = Path(__file__).resolve().parent.parent


def network_ms(preset: str, resolution: int, batch: int, mode: str) -> float:
    """Median step time from vs_timm.json when it has this row, else measured now."""
    path = ROOT / "benchmarks" / "results" / "vs_timm.json"
    if path.exists():
        for row in json.loads(path.read_text())["rows"]:
            if (row["model"], row["resolution"], row["batch"], row["mode"]) == (preset, resolution, batch, mode):
                return row["lcnn"]["p50_ms"]
    spec = timm_spec(TIMM_COUNTERPARTS[preset]).replace(resolution=resolution)
    return bench_spec(spec, batch, mode == "train", steps=None).p50_ms


def main(argv: list[str] | None = None) -> int:
    """Measure the machine, time every layer, write docs/roofline.md and docs/roofline.png."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(TIMM_COUNTERPARTS), choices=list(TIMM_COUNTERPARTS))
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "roofline.md")
    args = parser.parse_args(argv)

    machine = measure_machine()
    print(f"peak float32 matmul {machine.peak_flops / 1e9:.1f} GFLOP/s, bandwidth {machine.bandwidth / 1e9:.1f} GB/s, "
          f"ridge {machine.ridge:.1f} FLOP/byte", file=sys.stderr)
    summary, sections, points = [], [], {}
    for preset in args.models:
        spec = timm_spec(TIMM_COUNTERPARTS[preset]).replace(resolution=args.resolution)
        counts = count_spec(spec, args.batch)
        rows = []
        times = layer_times(counts.layers, "fused", spec.stem.padding, progress=f"{preset} layers")
        layer_total = sum(times)
        for layer, t in zip(counts.layers, times):
            achieved = layer.flops / t
            share = achieved / machine.attainable(layer.intensity)
            bound = machine.bound(layer.intensity)
            points.setdefault(preset, []).append((layer.intensity, achieved, layer.op))
            rows.append((layer.name, layer.op, f"{layer.macs / 1e6:.1f}", f"{layer.bytes / 1e6:.1f}",
                         f"{layer.intensity:.1f}", f"{t * 1e3:.2f}", f"{achieved / 1e9:.1f}", f"{100 * share:.0f}%", bound))
        infer_ms = network_ms(preset, args.resolution, args.batch, "inference")
        train_ms = network_ms(preset, args.resolution, args.batch, "train")
        memory_bound = [t for layer, t in zip(counts.layers, times) if machine.bound(layer.intensity) == "memory"]
        summary.append((preset, f"{counts.flops / 1e9:.1f}", f"{infer_ms:.0f}", f"{counts.flops / infer_ms / 1e6:.1f}",
                        f"{100 * counts.flops / infer_ms / 1e-3 / machine.peak_flops:.0f}%",
                        f"{train_ms:.0f}", f"{3 * counts.flops / train_ms / 1e6:.1f}",
                        f"{100 * 3 * counts.flops / train_ms / 1e-3 / machine.peak_flops:.0f}%",
                        f"{len(memory_bound)}/{len(rows)}", f"{100 * sum(memory_bound) / layer_total:.0f}%",
                        f"{100 * layer_total * 1e3 / infer_ms:.0f}%"))
        sections.append(f"### {preset} ({args.resolution} px, batch {args.batch})\n\n" + markdown_table(
            ("layer", "op", "MMACs", "MB moved", "FLOP/B", "ms", "GFLOP/s", "of roof", "bound"), rows,
            right=(False, False, True, True, True, True, True, True, False)))

    head = markdown_table(
        ("model", "GFLOP fwd", "infer ms", "infer GFLOP/s", "of peak", "train ms", "train GFLOP/s", "of peak",
         "memory-bound layers", "their share of layer time", "layers' sum / network"),
        summary, right=(False,) + (True,) * 10)
    text = f"""# Roofline (generated by `benchmarks/roofline.py`)

Machine: {len(os.sched_getaffinity(0))} CPU cores, measured {time.strftime('%Y-%m-%d')}.
Peak float32 matmul (2048^3, XLA dot): **{machine.peak_flops / 1e9:.1f} GFLOP/s**. Streaming memory
bandwidth (512 MB scale-and-add, read + write): **{machine.bandwidth / 1e9:.1f} GB/s**. Ridge point:
**{machine.ridge:.1f} FLOP/byte**: layers below it are memory-bound.

Train steps count 3x the forward FLOPs (forward, input gradient, weight gradient). "Layers' sum /
network" compares the per-layer forward times, each run alone, with the whole inference pass: the
rest is BN, activations, squeeze-excite gates and residual adds, which XLA fuses into the layers
inside the network.

{head}

![roofline](roofline.png)

""" + "\n\n".join(sections) + "\n"
    write_text_atomic(args.out, text)
    _plot(points, machine, args.out.with_suffix(".png"))
    print(head)
    return 0


def _plot(points: dict, machine, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    xs = [10 ** (i / 20) for i in range(-20, 81)]
    ax.plot(xs, [machine.attainable(x) / 1e9 for x in xs], color="black", linewidth=1.5, label="roofline")
    markers = {"depthwise_conv": "v", "conv": "o", "dense": "s", "grouped_conv": "^"}
    for (preset, pts), color in zip(points.items(), ("tab:blue", "tab:orange", "tab:green")):
        for op, marker in markers.items():
            sel = [(i, a) for i, a, o in pts if o == op]
            if sel:
                ax.scatter([i for i, _ in sel], [a / 1e9 for _, a in sel], s=14, marker=marker, color=color,
                           alpha=0.7, label=f"{preset} {op}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved GFLOP/s (forward, layer alone)")
    ax.set_title("Per-layer roofline, 224 px, batch 32, float32, 'fused' convs", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
