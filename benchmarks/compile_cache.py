"""First-step compile time of every preset's train step: before/after the custom VJPs, and cached.

Run:  .venv/bin/python benchmarks/compile_cache.py       (~15 min on 2 cores)

Each preset is compiled at the quickstart setting (32 px, batch 128, 10 classes, the `lcnn train`
step: forward, backward, SGD+momentum, EMA), each time in a fresh process:
  1. impl='shifted' with an empty cache: the formulation lcnn used before (autodiff gradients);
  2. impl='fused' with an empty cache: today's default (hand-written VJPs, im2col stems);
  3. impl='fused' again, reading the cache that run 2 wrote (JAX's persistent compilation cache).
Prints a markdown table (pasted into docs/benchmarks.md) and writes
benchmarks/results/compile_cache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "compile_cache.json"


def _worker(preset: str, impl: str, cache_dir: str, resolution: int, batch: int) -> dict:
    import jax

    from lcnn_jax.runtime import enable_compilation_cache

    enable_compilation_cache(cache_dir)
    from lcnn_jax.bench import bench_spec
    from lcnn_jax.presets import get_spec

    spec = get_spec(preset, resolution=resolution, num_classes=10)
    timing = bench_spec(spec, batch, True, impl=impl, steps=3)
    return dict(compile_s=timing.compile_s, step_ms=timing.p50_ms, backend=jax.default_backend())


def main(argv: list[str] | None = None) -> int:
    """Compile every preset twice (cold, cached) in fresh processes and tabulate."""
    from lcnn_jax.presets import list_presets

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list_presets(), choices=list_presets())
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--worker", nargs=3, metavar=("PRESET", "IMPL", "CACHE_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(*args.worker, args.resolution, args.batch)))
        return 0
    from tqdm import tqdm

    from lcnn_jax.atomic import write_json_atomic
    from lcnn_jax.runtime import find_tcmalloc
    from lcnn_jax.tables import markdown_table

    env = dict(os.environ)
    if find_tcmalloc():
        env["LD_PRELOAD"] = find_tcmalloc()
    rows = []
    for preset in tqdm(args.presets, desc="compile", unit="preset"):
        got = []
        with tempfile.TemporaryDirectory(prefix="lcnn-cache-") as before, tempfile.TemporaryDirectory(prefix="lcnn-cache-") as after:
            for impl, cache in (("shifted", before), ("fused", after), ("fused", after)):
                cmd = [sys.executable, __file__, "--worker", preset, impl, cache, "--resolution", str(args.resolution),
                       "--batch", str(args.batch)]
                out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
                got.append(json.loads(out.stdout.strip().splitlines()[-1]))
        rows.append(dict(preset=preset, before_s=got[0]["compile_s"], cold_s=got[1]["compile_s"], cached_s=got[2]["compile_s"],
                         before_step_ms=got[0]["step_ms"], step_ms=got[1]["step_ms"]))
        tqdm.write(f"{preset}: before {got[0]['compile_s']:.1f} s, now {got[1]['compile_s']:.1f} s, cached {got[2]['compile_s']:.2f} s")
    write_json_atomic(RESULTS, dict(date=time.strftime("%Y-%m-%d"), resolution=args.resolution, batch=args.batch, rows=rows))
    print(markdown_table(
        ("preset", "compile s, before (shifted)", "compile s, now (fused)", "now, from cache", "step ms before", "step ms now"),
        [(r["preset"], f"{r['before_s']:.1f}", f"{r['cold_s']:.1f}", f"{r['cached_s']:.2f}", f"{r['before_step_ms']:.0f}",
          f"{r['step_ms']:.0f}") for r in rows],
        right=(False, True, True, True, True, True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
