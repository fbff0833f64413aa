"""results.csv: one row per run of a sweep, from its config.json and summary.json."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

from lcnn_jax.config import to_dict
from lcnn_jax.sweep.runner import Run, load_run, run_state

# Summary fields in results.csv, in this order, before the flattened config.
COLUMNS = (
    "run_id", "state", "status", "model", "strategy", "target", "seed", "realised_ratio", "macs_error",
    "within_tolerance", "depth", "width", "resolution", "knob", "macs", "params", "activations",
    "eval_latency_ms", "train_img_per_s", "compile_s", "top1", "ema_top1", "top5", "ema_top5", "loss",
    "wall_s", "scaling_note",
)


def _flatten(tree: dict, prefix: str = "config.") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def row(run: Run) -> dict:
    """The results.csv row of one run (state only, if it has not written a summary yet)."""
    r = {"run_id": run.run_id, "state": run_state(run.workdir), "seed": run.config.train.seed,
         "model": run.config.model.name, "strategy": run.config.scaling.strategy, "target": run.config.scaling.target}
    summary = load_run(run.workdir)[1] if (run.workdir / "config.json").exists() else None
    if summary:
        scaling = summary.get("scaling") or {}
        r.update({k: summary.get(k) for k in COLUMNS if k in summary})
        r.update({k: scaling.get(k) for k in ("realised_ratio", "macs_error", "within_tolerance", "knob", "scaling_note")})
        latency = summary.get("eval_latency_ms")
        r["eval_latency_ms"] = latency.get("p50") if isinstance(latency, dict) else None
        r["depth"], r["width"], r["resolution"] = summary.get("depth"), summary.get("width"), summary.get("resolution")
    r.update(_flatten(to_dict(run.config)))
    return r


def collect(runs: list[Run], path: Path) -> list[dict]:
    """Write results.csv (atomically) for `runs`; returns the rows."""
    rows = [row(r) for r in runs]
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(COLUMNS) + extra, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".results.", dir=path.parent)
    with os.fdopen(fd, "w", newline="") as f:
        f.write(buf.getvalue())
    os.replace(tmp, path)
    return rows


def read_results(path: Path) -> list[dict]:
    """results.csv rows with numbers parsed back."""
    def parse(v: str):
        if v in ("", "None"):
            return None
        if v in ("True", "False"):
            return v == "True"
        try:
            return int(v)
        except ValueError:
            try:
                return float(v)
            except ValueError:
                return v

    with open(path, newline="") as f:
        return [{k: parse(v) for k, v in r.items()} for r in csv.DictReader(f)]
