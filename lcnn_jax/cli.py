"""The `lcnn` command line: thin wrappers over the library. Bad input exits 2 with one line."""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
import sys

from lcnn_jax.errors import ConfigError, unknown_choice
from lcnn_jax.presets import PRESETS, list_presets
from lcnn_jax.spec import IMPLS


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as a single line and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse hook
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive(cast, what: str):
    """argparse type: `cast(text)` that must be finite and >= the bound named in `what`."""

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


def _cmd_models(args) -> int:
    if args.json:
        print(json.dumps([dict(name=p.name, description=p.description, width=p.width, depth=p.depth,
                               resolution=p.resolution) for p in PRESETS.values()]))
        return 0
    from lcnn_jax.tables import text_table

    rows = [(p.name, f"{p.width:g}", f"{p.depth:g}", p.resolution, p.description) for p in PRESETS.values()]
    print(text_table(("model", "width", "depth", "res", "description"), rows, right=(False, True, True, True, False)))
    return 0


def _cmd_count(args) -> int:
    if args.all == (args.model is not None):
        raise ConfigError("give one MODEL or --all")
    if args.model is not None and args.model not in PRESETS:
        raise unknown_choice("model", args.model, list_presets())
    from lcnn_jax import count_table
    from lcnn_jax.count import count_spec
    from lcnn_jax.presets import get_spec

    if args.all:
        from tqdm import tqdm

        names = list_presets()
        rows = []
        for name in tqdm(names, desc="counting presets", unit="model", file=sys.stderr, leave=False):
            rows.extend(count_table.zoo_rows([name]))
        if args.json:
            print(json.dumps([dict(zip(count_table.ZOO_HEADERS, r)) for r in rows]))
        else:
            print(count_table.zoo_table(rows))
            print("MACs = multiply-adds (the MobileNet papers' Mult-Adds, EfficientNet's FLOPS); FLOPs = 2 x MACs.")
        return 0
    spec = get_spec(
        args.model, width=args.width, depth=args.depth, resolution=args.resolution, num_classes=args.num_classes
    )
    counts = count_spec(spec)
    if args.json:
        out = count_table.summary(spec, counts)
        if args.per_layer:
            out["layers"] = [layer.as_dict() for layer in counts.layers]
        print(json.dumps(out))
    else:
        if args.per_layer:
            print(count_table.per_layer_table(counts))
            print()
        print(count_table.totals_table(spec, counts))
    return 0


def _cmd_convert(args) -> int:
    from lcnn_jax.interop.timm import convert_checkpoint

    summary = convert_checkpoint(args.timm_name, args.checkpoint, args.outdir)
    print(
        f"converted {summary['tensors']} tensors of timm {args.timm_name} -> lcnn {summary['preset']} "
        f"(width {summary['width']:g}, {summary['num_classes']} classes, {summary['params']:,} params)"
    )
    print(f"wrote {summary['outdir']}")
    return 0


def _cmd_train(args) -> int:
    from lcnn_jax.config import load_config, run_id
    from lcnn_jax.runtime import enable_compilation_cache
    from lcnn_jax.train.loop import Diverged, train_and_evaluate

    config = load_config(args.config, args.overrides)
    enable_compilation_cache()
    workdir = args.workdir or f"workdirs/{run_id(config)}"
    print(f"lcnn train: workdir {workdir}", file=sys.stderr)
    try:
        summary = train_and_evaluate(config, workdir)
    except Diverged as e:
        print(f"lcnn train: diverged: {e} (see {workdir}/summary.json)", file=sys.stderr)
        return 1
    quality = ("map", "ema_map", "map50", "ema_map50") if config.task == "detection" else ("top1", "ema_top1", "top5")
    keys = ("status", *quality, "loss", "train_img_per_s", "compile_s", "wall_s")
    print(json.dumps({k: summary.get(k) for k in keys}, default=float))
    return 0


def _cmd_eval(args) -> int:
    from lcnn_jax.runtime import enable_compilation_cache
    from lcnn_jax.train.loop import evaluate_workdir

    enable_compilation_cache()
    print(json.dumps(evaluate_workdir(args.workdir), default=float))
    return 0


def _cmd_detect(args) -> int:
    from pathlib import Path

    from lcnn_jax.detect.draw import detect, draw, run_config
    from lcnn_jax.runtime import enable_compilation_cache

    run_config(args.workdir)  # a detection run, before any image or model work
    if not Path(args.image).is_file():
        raise ConfigError(f"image {args.image!r} does not exist")
    if not Path(args.out).absolute().parent.is_dir():
        raise ConfigError(f"the folder of {args.out!r} does not exist")
    enable_compilation_cache()
    found = detect(args.workdir, args.image, args.score)
    draw(found["image"], found["boxes"], found["scores"], found["classes"], found["names"], args.out)
    print(json.dumps({"step": found["step"], "detections": len(found["scores"]), "out": args.out}))
    return 0


def _cmd_bench(args) -> int:
    import jax

    from lcnn_jax.bench import bench_spec
    from lcnn_jax.convs import resolve_impl
    from lcnn_jax.presets import get_spec

    if args.cache:
        from lcnn_jax.runtime import enable_compilation_cache

        enable_compilation_cache()
    spec = get_spec(args.model, width=args.width, resolution=args.resolution, num_classes=args.num_classes)
    mode, impl = ("train step" if args.train else "inference"), resolve_impl(args.impl)
    print(f"lcnn bench: {args.model} at {spec.resolution} px, batch {args.batch}, {mode}, "
          f"{impl} convs on {jax.default_backend()}; compiling ...", file=sys.stderr)
    timing = bench_spec(spec, args.batch, args.train, impl=impl, steps=args.steps)
    result = dict(model=args.model, resolution=spec.resolution, width=spec.width, mode=mode, impl=impl,
                  backend=jax.default_backend(), **timing.as_dict())
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{timing.img_per_s:,.1f} img/s   p50 {timing.p50_ms:.2f} ms   p90 {timing.p90_ms:.2f} ms   "
              f"compile {timing.compile_s:.2f} s   ({len(timing.seconds)} timed steps of batch {args.batch})")
    return 0


def _lazy(module: str, name: str):
    """A subcommand handler calling `module.name(args)`, importing `module` only when it runs."""

    def run(args) -> int:
        return getattr(importlib.import_module(module), name)(args)

    return run


def _add_sweep_commands(sweeps) -> None:
    handler = functools.partial(_lazy, "lcnn_jax.sweep.commands")

    def common(p, runs: bool):
        p.add_argument("file", help="sweep file in W&B sweep format (sweeps/*.yaml)")
        p.add_argument("--out", help="sweep directory (default: workdirs/sweeps/NAME)")
        if runs:
            p.add_argument("--workers", type=_positive(int, "an integer >= 1"), default=1,
                           help="runs at once; each gets its own CPU cores (and GPUs)")
            p.add_argument("--executor", choices=("local", "slurm"), default="local", help="submitit executor")
            p.add_argument("--max-retries", type=int, default=1, help="retries of a failed run")

    p = sweeps.add_parser("run", help="run every unfinished run, then write results.csv and the report")
    common(p, runs=True)
    p.add_argument("--dry-run", action="store_true", help="resolve and count every run without training")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--gpus-per-worker", type=int, default=0, help="CUDA_VISIBLE_DEVICES slice per worker")
    p.add_argument("--slurm-partition")
    p.add_argument("--slurm-time", type=int, default=240, help="minutes per job")
    p.add_argument("--slurm-gpus", type=int, default=0)
    p.add_argument("--slurm-cpus", type=int, default=8)
    p.set_defaults(func=handler("cmd_run"))

    p = sweeps.add_parser("status", help="the sweep's runs by state")
    common(p, runs=False)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=handler("cmd_status"))

    p = sweeps.add_parser("report", help="collect results.csv and write report.html + PNGs")
    common(p, runs=False)
    p.set_defaults(func=handler("cmd_report"))

    p = sweeps.add_parser("wandb", help="create the W&B sweep from the file; print agent commands")
    p.add_argument("file")
    p.add_argument("--project", required=True)
    p.add_argument("--entity")
    p.add_argument("--machines", type=int, default=1)
    p.add_argument("--gpus-per-machine", type=int, default=0)
    p.set_defaults(func=handler("cmd_wandb"))

    p = sweeps.add_parser("search", help="compound (alpha, beta, gamma) search: STEP 1 grid, STEP 2 scale-up")
    common(p, runs=True)
    p.add_argument("--phis", default="1..3", help="STEP 2 phis: 1..3 or 1,2,3")
    p.add_argument("--constraint-tolerance", type=float, default=0.05,
                   help="with an explicit scaling.gamma list: keep |a*b^2*g^2 / constraint - 1| <= this")
    p.set_defaults(func=handler("cmd_search"))


def _add_experiment_commands(experiments) -> None:
    handler = functools.partial(_lazy, "lcnn_jax.experiment.commands")

    p = experiments.add_parser("list", help="the paper ablations in experiments/")
    p.add_argument("--json", action="store_true")
    p.add_argument("--root", help="experiments folder (default: the repository's experiments/)")
    p.set_defaults(func=handler("cmd_list"))

    p = experiments.add_parser("run", help="run one ablation and write experiments/results/NAME/SIZE/")
    p.add_argument("name", help="experiment name (lcnn experiment list)")
    p.add_argument("--size", choices=("smoke", "full"), default="smoke",
                   help="smoke: Fashion-MNIST on this CPU; full: the paper's setting, for accelerators")
    p.add_argument("--dry-run", action="store_true", help="print the plan: runs, MACs, expected device-hours")
    p.add_argument("--counts-only", action="store_true",
                   help="no training: the analysis on the counted plan (paper | ours counts in seconds)")
    p.add_argument("--json", action="store_true", help="with --dry-run: machine-readable plan")
    p.add_argument("--workers", type=_positive(int, "an integer >= 1"), default=2, help="runs at once")
    p.add_argument("--executor", choices=("local", "slurm"), default="local", help="submitit executor")
    p.add_argument("--max-retries", type=int, default=1, help="retries of a failed run")
    p.add_argument("--device-tflops", type=_positive(float, "a number > 0"), default=50.0,
                   help="sustained TFLOP/s per device assumed by --dry-run's device-hours")
    p.add_argument("--root", help="experiments folder (default: the repository's experiments/)")
    p.add_argument("--results", help="results root (default: ROOT/results)")
    p.add_argument("--workdir", help="run directories (default: workdirs/experiments/NAME/SIZE)")
    p.set_defaults(func=handler("cmd_run"))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every `lcnn` subcommand."""
    parser = _Parser(prog="lcnn", description="Lightweight-CNN scaling studies in JAX/Flax.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("models", help="list the presets")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("count", help="MACs, FLOPs, params and activations of a preset")
    p.add_argument("model", nargs="?", help="preset name (see `lcnn models`)")
    p.add_argument("--all", action="store_true", help="count every preset at its defaults, next to published figures")
    p.add_argument("--resolution", type=_positive(int, "an integer >= 1"), help="input side length in pixels")
    p.add_argument("--width", type=_positive(float, "a number > 0"), help="width multiplier (> 0)")
    p.add_argument("--depth", type=_positive(float, "a number > 0"), help="depth multiplier (> 0)")
    p.add_argument("--num-classes", type=_positive(int, "an integer >= 1"), default=1000, help="classifier outputs")
    p.add_argument("--per-layer", action="store_true", help="also list every conv/dense layer")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_count)

    p = sub.add_parser("train", help="train and evaluate a model (see README: quickstart)")
    p.add_argument("--config", help="YAML file of config keys (nested or dotted)")
    p.add_argument("--workdir", help="run directory, resumed if it exists (default: workdirs/MODEL-CONFIGHASH)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. model.width=0.5")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("bench", help="img/s, p50/p90 step latency and compile time of a preset")
    p.add_argument("model", help="preset name (see `lcnn models`)")
    p.add_argument("--resolution", type=_positive(int, "an integer >= 1"), help="input side length (default: the preset's)")
    p.add_argument("--batch", type=_positive(int, "an integer >= 1"), default=32, help="images per step (default 32)")
    p.add_argument("--train", action="store_true", help="time a train step (forward, backward, SGD) instead of inference")
    p.add_argument("--width", type=_positive(float, "a number > 0"), help="width multiplier (> 0)")
    p.add_argument("--num-classes", type=_positive(int, "an integer >= 1"), default=1000, help="classifier outputs")
    p.add_argument("--impl", default="auto", choices=IMPLS, help="depthwise/pointwise formulation (default auto)")
    p.add_argument("--steps", type=_positive(int, "an integer >= 1"), default=10, help="timed steps after one warm-up")
    p.add_argument("--cache", action="store_true", help="use the persistent compilation cache (default: time a cold compile)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("eval", help="evaluate the newest checkpoint of a run directory")
    p.add_argument("workdir")
    p.set_defaults(func=_cmd_eval)

    p = sub.add_parser("detect", help="draw a detection run's boxes (newest checkpoint, EMA weights) on an image")
    p.add_argument("workdir", help="a task=detection run directory")
    p.add_argument("image", help="PNG or JPEG, grayscale or RGB (resized to the run's resolution)")
    p.add_argument("out", help="the PNG to write")
    p.add_argument("--score", type=float, default=0.3, help="smallest score drawn (default 0.3)")
    p.set_defaults(func=_cmd_detect)

    p = sub.add_parser("sweep", help="run, inspect and report scaling sweeps (W&B sweep files)")
    sweeps = p.add_subparsers(dest="sweep_command", required=True, parser_class=_Parser)
    _add_sweep_commands(sweeps)

    p = sub.add_parser("experiment", help="reproduce the papers' scaling ablations (experiments/)")
    experiments = p.add_subparsers(dest="experiment_command", required=True, parser_class=_Parser)
    _add_experiment_commands(experiments)

    p = sub.add_parser("convert", help="import pretrained weights from another framework")
    frameworks = p.add_subparsers(dest="framework", required=True, parser_class=_Parser)
    t = frameworks.add_parser("timm", help="a timm (PyTorch) checkpoint -> an lcnn orbax checkpoint")
    t.add_argument("timm_name", help="timm model name, e.g. tf_efficientnet_b0 or mobilenetv3_large_100")
    t.add_argument("checkpoint", help="the timm state_dict: .pth/.pt/.bin (needs torch) or .safetensors")
    t.add_argument("outdir", help="new directory for model.json + variables/ (orbax)")
    t.set_defaults(func=_cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lcnn` console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"lcnn {args.command}: error: {e}", file=sys.stderr)
        return 2


# Commands whose speed depends on the allocator (see lcnn_jax.runtime).
_HEAVY = {"train", "eval", "detect", "bench", "sweep", "experiment"}


def run() -> None:
    """Console-script entry: heavy commands re-execute under tcmalloc when available."""
    argv = sys.argv[1:]
    if argv and argv[0] in _HEAVY:
        from lcnn_jax.runtime import reexec_with_tcmalloc

        reexec_with_tcmalloc(argv)
    sys.exit(main(argv))


if __name__ == "__main__":
    sys.exit(main())
