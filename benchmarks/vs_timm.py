"""lcnn (JAX) against timm (PyTorch) on the same CPU: same architecture, resolution, batch, float32.

Run:  .venv/bin/python benchmarks/vs_timm.py            (~25 min on 2 cores; needs the [torch] extra)
      .venv/bin/python benchmarks/vs_timm.py --models mobilenet_v2 --settings 32/128 --rounds 1

Every measurement runs in a fresh process, lcnn and timm in turn, both under tcmalloc when the
machine has it (the allocator `lcnn train` uses) and with as many threads as the process may use.
A train step is forward, backward and an SGD+momentum update (lcnn: the `make_train_step` of
`lcnn train`, which also keeps the EMA); inference is an eval-mode forward pass. Each process
times as many steps as fit in ~5 s after one warm-up and reports the median; with `--rounds R`
each side runs R processes and keeps its fastest median, because this VM's step times vary by
up to ~1.5x between otherwise identical processes. Results: benchmarks/results/vs_timm.json and
a markdown table on stdout (pasted into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lcnn_jax.interop.timm import TIMM_COUNTERPARTS

SETTINGS = ("32/128", "64/64", "224/32")  # resolution/batch
MODES = ("train", "inference")
RESULTS = Path(__file__).parent / "results" / "vs_timm.json"


def _timm_worker(timm_name: str, resolution: int, batch: int, train: bool) -> dict:
    import timm
    import torch

    from lcnn_jax.bench import time_steps

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    torch.manual_seed(0)
    model = timm.create_model(timm_name, num_classes=1000)
    x = torch.randn(batch, 3, resolution, resolution)
    y = torch.randint(0, 1000, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train(train)

    def step():
        if train:
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        else:
            with torch.inference_mode():
                model(x)

    # The first call (allocations, oneDNN primitive creation) is torch's counterpart of compiling.
    timing = time_steps(lambda _: step(), None, batch, steps=None)
    return dict(timing.as_dict(), compile_s=timing.first_s, version=f"torch {torch.__version__}, timm {timm.__version__}")


def _lcnn_worker(timm_name: str, resolution: int, batch: int, train: bool) -> dict:
    import jax

    from lcnn_jax.bench import bench_spec
    from lcnn_jax.convs import resolve_impl
    from lcnn_jax.interop.timm import timm_spec

    spec = timm_spec(timm_name).replace(resolution=resolution)
    timing = bench_spec(spec, batch, train, steps=None)
    return dict(timing.as_dict(), impl=resolve_impl("auto"), version=f"jax {jax.__version__}")


def _run_worker(framework: str, preset: str, resolution: int, batch: int, mode: str) -> dict:
    """One measurement in a fresh process (both frameworks under the same allocator)."""
    from lcnn_jax.runtime import find_tcmalloc

    env = dict(os.environ)
    lib = find_tcmalloc()
    if lib:
        env["LD_PRELOAD"] = ":".join(filter(None, [lib, env.get("LD_PRELOAD", "")]))
    cmd = [sys.executable, __file__, "--worker", framework, preset, str(resolution), str(batch), mode]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _table(rows: list[dict]) -> str:
    from lcnn_jax.tables import markdown_table

    body = [
        (r["model"], r["resolution"], r["batch"], r["mode"], f"{r['lcnn']['img_per_s']:,.0f}", f"{r['timm']['img_per_s']:,.0f}",
         f"{r['lcnn']['p50_ms']:.1f}", f"{r['timm']['p50_ms']:.1f}", f"{r['ratio']:.2f}")
        for r in rows
    ]
    header = ("model", "px", "batch", "mode", "lcnn img/s", "timm img/s", "lcnn ms/step", "timm ms/step", "lcnn/timm")
    return markdown_table(header, body, right=(False, True, True, False, True, True, True, True, True))


def main(argv: list[str] | None = None) -> int:
    """Run the grid (or one worker measurement with --worker) and print the ratio table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(TIMM_COUNTERPARTS), choices=list(TIMM_COUNTERPARTS))
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), help="resolution/batch pairs, e.g. 64/64")
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--rounds", type=int, default=2, help="processes per side; the fastest median is kept")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", nargs=5, metavar=("FRAMEWORK", "MODEL", "RES", "BATCH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        framework, preset, res, batch, mode = args.worker
        fn = _timm_worker if framework == "timm" else _lcnn_worker
        print(json.dumps(fn(TIMM_COUNTERPARTS[preset], int(res), int(batch), mode == "train")))
        return 0
    try:
        settings = [tuple(int(v) for v in s.split("/")) for s in args.settings]
    except ValueError:
        parser.error(f"--settings takes RESOLUTION/BATCH pairs like 64/64, got {args.settings}")
    from tqdm import tqdm

    from lcnn_jax.atomic import write_json_atomic

    grid = [(m, r, b, mode) for m in args.models for r, b in settings for mode in args.modes]
    rows = []
    for model, res, batch, mode in tqdm(grid, desc="vs timm", unit="row"):
        best = {}
        for _ in range(max(1, args.rounds)):
            for framework in ("lcnn", "timm"):  # interleaved, so slow spells hit both sides
                got = _run_worker(framework, model, res, batch, mode)
                if framework not in best or got["p50_ms"] < best[framework]["p50_ms"]:
                    best[framework] = got
        row = dict(model=model, resolution=res, batch=batch, mode=mode, **best,
                   ratio=best["lcnn"]["img_per_s"] / best["timm"]["img_per_s"])
        rows.append(row)
        tqdm.write(f"{model} {res}px b{batch} {mode}: lcnn {row['lcnn']['img_per_s']:,.0f} img/s, "
                   f"timm {row['timm']['img_per_s']:,.0f} img/s, ratio {row['ratio']:.2f}")
    write_json_atomic(args.out, dict(date=time.strftime("%Y-%m-%d"), cpus=len(os.sched_getaffinity(0)), rows=rows))
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
