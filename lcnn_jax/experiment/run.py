"""`lcnn experiment run NAME --size smoke|full [--dry-run]`: plan, train (or count), analyse.

Training goes through the sweep runner, so an experiment resumes like any sweep. The analysis
writes its table, PNGs and command.txt into a scratch folder that replaces
`experiments/results/NAME/SIZE/` only when complete: a failed analysis leaves the last good
results in place.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from lcnn_jax.experiment.plan import Planned, experiment_runs, training_flops
from lcnn_jax.experiment.registry import Experiment
from lcnn_jax.tables import text_table


@dataclasses.dataclass(frozen=True)
class ExperimentResult:
    """What an analysis gets: one row per (run, series) and the folder to write into."""

    size: str
    rows: list[dict]
    out: Path


def describe(planned: list[Planned]) -> list[dict]:
    """Resolved architecture, counts and training cost of every run, one row per (run, series)."""
    from tqdm import tqdm

    from lcnn_jax.sweep.results import describe_run

    rows = []
    for p in tqdm(planned, desc="resolving runs", unit="run", file=sys.stderr, leave=False):
        d = describe_run(p.run)
        d["train_flops"] = training_flops(p.run.config, d["macs"])
        rows.extend(dict(d, series=s) for s in p.series)
    return rows


def print_plan(experiment: Experiment, size: str, planned: list[Planned], device_tflops: float, as_json: bool) -> None:
    """The runs, their MACs and multipliers, and the device-hours the plan would take."""
    rows = describe(planned)
    unique = {r["run_id"]: r for r in rows}.values()  # a run in two series is one run
    known = [r["train_flops"] for r in unique if r["train_flops"] is not None]
    hours = sum(known) / (device_tflops * 1e12) / 3600 if experiment.kind == "train" else 0.0
    if as_json:
        print(json.dumps(dict(experiment=experiment.name, size=size, kind=experiment.kind, runs=len(unique),
                              device_hours=hours, device_tflops=device_tflops, rows=rows), indent=1, default=str))
        return
    table = [(r["series"], r["run_id"], r["model"], r["seed"], f"{r['depth']:.3g}", f"{r['width']:.3g}", r["resolution"],
              f"{r['macs'] / 1e6:,.1f}M", f"{r['params'] / 1e6:.2f}M",
              f"{r['train_flops'] / 1e15:,.1f}" if r["train_flops"] is not None else "?") for r in rows]
    print(f"{experiment.name} ({size}): {experiment.title}")
    print(text_table(("series", "run", "model", "seed", "depth", "width", "res", "MACs", "params", "train PFLOP"), table,
                     right=(False, False, False, True, True, True, True, True, True, True)))
    if experiment.kind == "train":
        unknown = len(unique) - len(known)
        print(f"{len(unique)} runs; {sum(known) / 1e15:,.1f} PFLOP to train and evaluate; about {hours:,.1f} device-hours "
              f"at a sustained {device_tflops:g} TFLOP/s" + (f" ({unknown} runs of unknown dataset size not counted)" if unknown else ""))
    else:
        print(f"{len(unique)} configurations; {experiment.kind} only, no training")


def command_line(argv: list[str]) -> str:
    """The lcnn command that reproduces a result, for command.txt."""
    return "lcnn " + " ".join(shlex.quote(a) for a in argv)


def run_experiment(
    experiment: Experiment, size: str, *, results_root: Path, workdir: Path, workers: int = 1,
    executor: str = "local", max_retries: int = 1, argv: list[str] = (), counts_only: bool = False,
) -> Path:
    """Train (for KIND train) or count every run, then analyse into results_root/NAME/SIZE; returns that folder.

    `counts_only` skips training: the analysis gets the counted plan, so the paper | ours count
    tables come out in seconds (accuracy columns empty), in results_root/NAME/SIZE-counts.
    """
    from lcnn_jax.sweep.results import collect
    from lcnn_jax.sweep.runner import run_state, run_sweep

    t0 = time.time()
    planned = experiment_runs(experiment, size, workdir)
    trains = experiment.kind == "train" and not counts_only
    if trains:
        done_before = sum(run_state(p.run.workdir) in ("completed", "diverged") for p in planned)
        run_sweep([p.run for p in planned], workdir, workers=workers, executor=executor, max_retries=max_retries)
        results = {r["run_id"]: r for r in collect([p.run for p in planned], workdir / "results.csv")}
        rows = [dict(results[p.run.run_id], series=s) for p in planned for s in p.series]
    else:
        rows = describe(planned)
    final = results_root / experiment.name / (f"{size}-counts" if counts_only and experiment.kind == "train" else size)
    final.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{size}.", dir=final.parent))
    try:
        experiment.analysis().analyze(ExperimentResult(size, rows, scratch))
        wall = time.time() - t0
        if trains:
            train_s = sum(float(r.get("wall_s") or 0) for r in {r["run_id"]: r for r in rows}.values())
            what = (f"{len(planned)} runs, {len(planned) - done_before} trained now ({done_before} were complete); "
                    f"all runs took {train_s / 60:.1f} min of worker time")
        else:
            what = f"{len(planned)} configurations, no training"
        (scratch / "command.txt").write_text(
            f"{command_line(argv)}\n"
            f"# {datetime.date.today().isoformat()}, {platform.node() or 'host'}: {os.cpu_count()} CPUs, {platform.machine()}, "
            f"python {platform.python_version()}\n"
            f"# wall time {wall / 60:.1f} min: {what}\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(scratch, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final
