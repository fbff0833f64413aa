"""A run's row: its config, summary.json and state; results.csv is one row per run of a sweep."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lcnn_jax.atomic import write_text_atomic
from lcnn_jax.config import flatten, to_dict
from lcnn_jax.sweep.runner import Run, read_summary, run_state

# Summary fields in results.csv, in this order, before the flattened config.
COLUMNS = (
    "run_id", "state", "status", "model", "strategy", "target", "phi", "alpha", "beta", "gamma", "seed",
    "realised_ratio", "macs_error", "within_tolerance", "depth", "width", "resolution", "knob", "macs", "params",
    "activations", "bits", "sparsity", "effective_params", "effective_macs", "model_bytes", "ptq_top1", "ptq_agreement",
    "ptq_model_bytes",
    "eval_latency_ms", "eval_latency_p90_ms", "train_img_per_s", "compile_s", "top1", "ema_top1", "top5", "ema_top5", "loss",
    "wall_s", "scaling_note", "map", "map50", "ema_map", "ema_map50",
)
# Fields of the scaling record (see lcnn_jax.resolve) copied into a row.
SCALING_FIELDS = ("realised_ratio", "macs_error", "within_tolerance", "knob", "scaling_note", "phi", "alpha", "beta", "gamma")


def _identity(run: Run) -> dict:
    s = run.config.scaling
    return {"run_id": run.run_id, "seed": run.config.train.seed, "model": run.config.model.name, "strategy": s.strategy,
            "target": s.target, "phi": s.phi, "alpha": s.alpha, "beta": s.beta, "gamma": s.gamma}


def row(run: Run) -> dict:
    """The results.csv row of one run (identity and state only, if it has not written a summary yet)."""
    summary = read_summary(run.workdir)
    r = _identity(run)
    r["state"] = run_state(run.workdir, summary)
    if summary:
        r.update({k: summary[k] for k in COLUMNS if k in summary})
        scaling = summary.get("scaling") or {}
        r.update({k: scaling[k] for k in SCALING_FIELDS if k in scaling})
        latency = summary.get("eval_latency_ms") or {}  # {p50, p90}; absent until a run completes
        r["eval_latency_ms"], r["eval_latency_p90_ms"] = latency.get("p50"), latency.get("p90")
    r.update(flatten(to_dict(run.config), "config."))
    return r


def describe_run(run: Run) -> dict:
    """A run's row without training: its resolved model's realised MACs, params and multipliers."""
    from lcnn_jax.resolve import num_classes, resolve_model
    from lcnn_jax.scaling import counts

    spec, scaling = resolve_model(run.config, num_classes(run.config))
    c = counts(spec)
    r = _identity(run)
    r.update(macs=c.macs, params=c.params, activations=c.activations, depth=spec.depth, width=spec.width,
             resolution=spec.resolution, realised_ratio=1.0, within_tolerance=True, scaling_note="")
    r.update({k: scaling[k] for k in SCALING_FIELDS if k in scaling})
    r["config"] = to_dict(run.config)
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
    write_text_atomic(path, buf.getvalue())
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
