"""`lcnn sweep wandb`: the same sweep file as a W&B sweep, and the agent command for each machine."""

from __future__ import annotations

import copy

from lcnn_jax.sweep.sweepfile import ARGS_MACRO, SweepFile

DEFAULT_COMMAND = ["${env}", "lcnn", "train", ARGS_MACRO]


def wandb_config(sweep: SweepFile) -> dict:
    """The dict handed to `wandb.sweep`: the file itself, with lcnn's command filled in if absent."""
    config = copy.deepcopy(sweep.raw)
    config.setdefault("name", sweep.name)
    config.setdefault("command", list(DEFAULT_COMMAND))
    return config


def agent_commands(sweep_path: str, machines: int, gpus_per_machine: int = 0) -> list[str]:
    """One `wandb agent` line per machine (and per GPU when several share a machine)."""
    lines = []
    for m in range(machines):
        if gpus_per_machine:
            for g in range(gpus_per_machine):
                lines.append(f"# machine {m}, GPU {g}\nCUDA_VISIBLE_DEVICES={g} wandb agent {sweep_path}")
        else:
            lines.append(f"# machine {m}\nwandb agent {sweep_path}")
    return lines


def create(sweep: SweepFile, project: str, entity: str | None = None) -> str:
    """Register the sweep with the W&B server; returns ENTITY/PROJECT/SWEEP_ID."""
    import wandb

    sweep_id = wandb.sweep(wandb_config(sweep), project=project, entity=entity)
    return "/".join(p for p in (entity, project, sweep_id) if p)
