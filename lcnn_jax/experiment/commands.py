"""What `lcnn experiment list|run` do; the CLI only parses arguments."""

from __future__ import annotations

import json
from pathlib import Path

from lcnn_jax.experiment.plan import experiment_runs
from lcnn_jax.experiment.registry import default_root, get_experiment, list_experiments
from lcnn_jax.experiment.run import print_plan, run_experiment
from lcnn_jax.tables import text_table


def cmd_list(args) -> int:
    """Name, kind, stated smoke time and title of every experiment."""
    experiments = list_experiments(args.root and Path(args.root))
    if args.json:
        print(json.dumps([dict(name=e.name, kind=e.kind, smoke_minutes=e.smoke_minutes, title=e.title) for e in experiments]))
        return 0
    print(text_table(("name", "kind", "smoke", "title"),
                     [(e.name, e.kind, f"{e.smoke_minutes:g} min", e.title) for e in experiments]))
    return 0


def reproducing_argv(args) -> list[str]:
    """The `lcnn` arguments that redo this run: the name, the size, and every option that was set."""
    argv = ["experiment", "run", args.name, "--size", args.size]
    if args.counts_only:
        return argv + ["--counts-only"]
    argv += ["--workers", str(args.workers)]
    optional = {"--executor": (args.executor, "local"), "--max-retries": (args.max_retries, 1), "--root": (args.root, None),
                "--results": (args.results, None), "--workdir": (args.workdir, None)}
    for flag, (value, default) in optional.items():
        if value != default:
            argv += [flag, str(value)]
    return argv


def cmd_run(args) -> int:
    """Dry-run (plan) or run one experiment at one size."""
    root = Path(args.root) if args.root else default_root()
    experiment = get_experiment(args.name, root)
    workdir = Path(args.workdir) if args.workdir else Path("workdirs") / "experiments" / experiment.name / args.size
    if args.dry_run:
        print_plan(experiment, args.size, experiment_runs(experiment, args.size, workdir), args.device_tflops, args.json)
        return 0
    results_root = Path(args.results) if args.results else root / "results"
    out = run_experiment(experiment, args.size, results_root=results_root, workdir=workdir, workers=args.workers,
                         executor=args.executor, max_retries=args.max_retries, counts_only=args.counts_only,
                         argv=reproducing_argv(args))
    table = out / "table.md"
    if table.exists():
        print(table.read_text())
    print(f"results: {out}")
    return 0
