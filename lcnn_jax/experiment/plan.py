"""An experiment's runs: its sweep files expanded, one series per file, and what they cost.

The same config in two files (the unscaled base shared by a width and a depth series, say) is
one run: every run is tagged with the experiment as its wandb group, so its id does not depend
on the file it came from.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lcnn_jax.data.catalog import KNOWN
from lcnn_jax.experiment.registry import Experiment
from lcnn_jax.sweep.runner import Run, plan
from lcnn_jax.sweep.sweepfile import load_sweep



@dataclasses.dataclass(frozen=True)
class Planned:
    """A run and the series (sweep files) it belongs to."""

    run: Run
    series: tuple[str, ...]


def experiment_runs(experiment: Experiment, size: str, workdir: Path) -> list[Planned]:
    """Every distinct run of the experiment at `size`, with its series."""
    by_id: dict[str, Planned] = {}
    for path in experiment.sweep_files(size):
        sweep = load_sweep(path)
        for run in plan(sweep, workdir, extra=(f"wandb.group={experiment.name}-{size}",)):
            old = by_id.get(run.run_id)
            by_id[run.run_id] = Planned(run, (old.series if old else ()) + (path.stem,))
    return list(by_id.values())


def split_sizes(config) -> tuple[int | None, int | None]:
    """(train, eval) examples of the run's dataset: known sizes, else the prepared TFDS info."""
    d = config.data
    sizes = KNOWN[d.dataset][1:] if d.dataset in KNOWN else None
    if sizes is None:
        try:
            from lcnn_jax.data.sources import builder_for

            splits = builder_for(d.dataset, d.data_dir).info.splits
            sizes = (splits[d.train_split].num_examples, splits[d.eval_split].num_examples)
        except Exception:  # not prepared here: the plan says "unknown" rather than failing
            return None, None
    n_train = min(sizes[0], d.max_train_examples) if d.max_train_examples else sizes[0]
    return n_train, sizes[1]


def training_flops(config, macs: int) -> float | None:
    """FLOPs to train and evaluate one run: 3x forward (fwd + bwd) per train image, 1x per eval image."""
    n_train, n_eval = split_sizes(config)
    if n_train is None:
        return None
    epochs = config.train.epochs
    evals = max(1, int(epochs / config.train.eval_every_epochs))
    return 2.0 * macs * (3 * n_train * epochs + n_eval * evals)
