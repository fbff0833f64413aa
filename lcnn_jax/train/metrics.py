"""metrics.jsonl (the source of truth) and its wandb mirror."""

from __future__ import annotations

import json
import numbers
import os
import uuid
from pathlib import Path

from lcnn_jax.atomic import write_text_atomic
from lcnn_jax.config import WandbConfig


def read_jsonl(path: str | Path) -> list[dict]:
    """Every complete record of a JSONL file (a torn last line from a kill is skipped)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricLog:
    """Appends one JSON object per line; on opening, drops records past `resume_step` (the restored step)."""

    def __init__(self, path: str | Path, resume_step: int):
        self.path = Path(path)
        if self.path.exists():
            kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= resume_step]
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a")

    def write(self, record: dict) -> None:
        """Append `record` and flush it to the OS."""
        self._file.write(json.dumps(record, default=float) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        self._file.close()


class WandbMirror:
    """Mirrors metric records to a wandb run; offline by default, never prompts."""

    def __init__(self, cfg: WandbConfig, workdir: Path, config: dict, resume: bool):
        self.run = None
        if not cfg.enabled or cfg.mode == "disabled":
            return
        import wandb

        # Under `wandb agent` the run belongs to the W&B sweep: online, with the agent's run id.
        under_agent = "WANDB_SWEEP_ID" in os.environ
        id_file = workdir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if resume and id_file.exists() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(
            project=cfg.project, entity=cfg.entity, name=cfg.name or workdir.name, dir=str(workdir),
            group=cfg.group, job_type=cfg.job_type, config=config, id=None if under_agent else run_id,
            resume=None if under_agent else "allow", mode="online" if under_agent else cfg.mode,
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        # Train and eval records share steps; wandb drops a second log() at a committed step, so
        # every key is plotted against our own "step" instead of wandb's internal counter.
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def log(self, record: dict) -> None:
        """Log the numeric fields of a metrics.jsonl `record` as SPLIT/KEY ("step" and "epoch" as they are;
        "step" is the x-axis)."""
        if self.run is not None:
            prefix = f"{record['split']}/" if "split" in record else ""
            values = {k if k in ("step", "epoch") else prefix + k: float(v) for k, v in record.items()
                      if isinstance(v, numbers.Real) and not isinstance(v, bool)}
            self.run.log(values)

    def summary(self, values: dict) -> None:
        """Set run summary fields (final metrics, status)."""
        if self.run is not None:
            for k, v in values.items():
                if isinstance(v, (numbers.Real, str)):
                    self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        """Close the run (writes the offline files)."""
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
