"""What `lcnn sweep run|status|report|wandb|search` do; the CLI only parses arguments."""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

from lcnn_jax.sweep.results import collect, describe_run, row
from lcnn_jax.sweep.runner import Run, plan, run_sweep, runs_for, sweep_dir
from lcnn_jax.sweep.sweepfile import SweepFile, load_sweep
from lcnn_jax.tables import text_table


def dry_run(runs: list[Run], as_json: bool) -> None:
    """Print every run's resolved config and realised MACs/params/multipliers."""
    from tqdm import tqdm

    rows = [describe_run(r) for r in tqdm(runs, desc="resolving runs", unit="run", file=sys.stderr, leave=False)]
    if as_json:
        print(json.dumps(rows, indent=1))
        return
    table = [(r["run_id"], r["strategy"], f"{r['target']:g}", r["seed"], f"{r['realised_ratio']:.3f}",
              f"{r['depth']:.3f}", f"{r['width']:.3f}", r["resolution"], f"{r['macs']:,}", f"{r['params']:,}",
              "yes" if r["within_tolerance"] else "NO") for r in rows]
    tolerances = {r.config.scaling.tolerance for r in runs}
    within = f"within {100 * tolerances.pop():g}%" if len(tolerances) == 1 else "within tolerance"
    print(text_table(("run", "strategy", "target", "seed", "realised", "depth", "width", "res", "MACs", "params", within),
                     table, right=(False, False, True, True, True, True, True, True, True, True, False)))
    for r in rows:
        if r["scaling_note"]:
            print(f"note: {r['run_id']}: {r['scaling_note']}")


def write_outputs(sweep: SweepFile, runs: list[Run], out: Path) -> Path:
    """results.csv and the report for the runs so far; returns report.html."""
    from lcnn_jax.sweep.report import write_report

    rows = collect(runs, out / "results.csv")
    metric = sweep.metric.split("/")[-1]
    return write_report(rows, out / "report", sweep.name, metric=metric, wandb_cfg=runs[0].config.wandb)


def cmd_run(args) -> int:
    """Run (or dry-run) every unfinished run of a sweep file, then collect and report."""
    sweep = load_sweep(args.file)
    out = sweep_dir(sweep, args.out)
    runs = plan(sweep, out)
    if args.dry_run:
        dry_run(runs, args.json)
        return 0
    slurm = dict(partition=args.slurm_partition, time=args.slurm_time, gpus=args.slurm_gpus, cpus=args.slurm_cpus)
    states = run_sweep(runs, out, workers=args.workers, executor=args.executor, max_retries=args.max_retries,
                       gpus_per_worker=args.gpus_per_worker, slurm=slurm)
    page = write_outputs(sweep, runs, out)
    counts = dict(collections.Counter(states.values()))
    summary = dict(sweep=sweep.name, runs=len(runs), states=counts, results=str(out / "results.csv"), report=str(page))
    print(json.dumps(summary) if args.json else f"{sweep.name}: {counts}; results {out / 'results.csv'}; report {page}")
    return 0 if counts.get("failed", 0) == 0 else 1


def cmd_status(args) -> int:
    """A table of the sweep's runs by state."""
    sweep = load_sweep(args.file)
    out = sweep_dir(sweep, args.out)
    metric = sweep.metric.split("/")[-1]
    keys = ("run_id", "state", "strategy", "target", "seed", metric)
    rows = [{k: r.get(k) for k in keys} for r in map(row, plan(sweep, out))]
    if args.json:
        print(json.dumps(rows))
        return 0
    order = {s: i for i, s in enumerate(("running", "failed", "pending", "diverged", "completed"))}
    rows.sort(key=lambda r: (order.get(r["state"], 9), r["strategy"], r["target"], r["seed"]))
    print(text_table(("run", "state", "strategy", "target", "seed", metric),
                     [(r["run_id"], r["state"], r["strategy"], f"{r['target']:g}", r["seed"],
                       f"{100 * r[metric]:.2f}" if r[metric] is not None else "") for r in rows],
                     right=(False, False, False, True, True, True)))
    counts = collections.Counter(r["state"] for r in rows)
    print(", ".join(f"{counts[s]} {s}" for s in order if counts[s]))
    return 0


def cmd_report(args) -> int:
    """(Re)collect results.csv and write the report from whatever has finished."""
    sweep = load_sweep(args.file)
    out = sweep_dir(sweep, args.out)
    page = write_outputs(sweep, plan(sweep, out), out)
    print((out / "report" / "table.md").read_text())
    print(f"report: {page}")
    return 0


def cmd_wandb(args) -> int:
    """Create the W&B sweep from the file and print the agent command for each machine."""
    from lcnn_jax.sweep import wandb_sweep

    sweep = load_sweep(args.file)
    path = wandb_sweep.create(sweep, args.project, args.entity)
    print(f"created W&B sweep {path} from {args.file}")
    print("\n".join(wandb_sweep.agent_commands(path, args.machines, args.gpus_per_machine)))
    return 0


def cmd_search(args) -> int:
    """STEP 1 (grid at phi=1, ranked), then STEP 2 (scale with the winner), then the report."""
    from lcnn_jax.scaling import Coefficients
    from lcnn_jax.sweep import search
    from lcnn_jax.tables import markdown_table

    sweep = load_sweep(args.file)
    out = sweep_dir(sweep, args.out)
    phis = search.parse_phis(args.phis)
    step1, rejected = search.step1_configs(sweep, args.constraint_tolerance)
    for a, b, g, why in rejected:
        print(f"rejected alpha={a} beta={b} gamma={g}: {why}", file=sys.stderr)
    runs1 = runs_for(step1, out)
    run_sweep(runs1, out, workers=args.workers, executor=args.executor, max_retries=args.max_retries)
    metric = sweep.metric.split("/")[-1]
    scored = [(r.config, rw[metric]) for r, rw in zip(runs1, map(row, runs1)) if rw["state"] == "completed"]
    ranking = search.rank(scored, sweep.goal)
    if not ranking:
        print("no STEP 1 run completed", file=sys.stderr)
        return 1
    best = ranking[0]
    table = markdown_table(("alpha", "beta", "gamma", "a*b^2*g^2", f"{metric} mean ± std", "seeds"),
                           [(r["alpha"], r["beta"], f"{r['gamma']:.4f}",
                             f"{Coefficients(r['alpha'], r['beta'], r['gamma']).flops_growth:.3f}",
                             f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f}", r["n"]) for r in ranking],
                           right=(True,) * 6)
    (out / "search_ranking.md").write_text(table + "\n")
    print(table)
    print(f"chosen: alpha={best['alpha']} beta={best['beta']} gamma={best['gamma']:.4f}")
    runs2 = runs_for(search.step2_configs(step1, best, phis), out)
    run_sweep(runs2, out, workers=args.workers, executor=args.executor, max_retries=args.max_retries)
    # STEP 2 at phi=1 is the winner's STEP 1 run (same config, same id): runs_for lists it once.
    page = write_outputs(sweep, runs_for([r.config for r in runs1 + runs2], out), out)
    print(f"report: {page}")
    return 0
