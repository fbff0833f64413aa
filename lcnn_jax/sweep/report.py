"""Sweep report: the sweep's metric (top-1, or mAP for detection) against MACs, params and latency
per strategy, the Pareto front, a table.

Writes report/{top1_vs_macs,top1_vs_params,top1_vs_latency,pareto}.png, table.md and
report.html next to results.csv, and logs the same plots and table to an (offline) wandb run.
"""

from __future__ import annotations

import base64
import collections
import html
import math
import statistics
from pathlib import Path

from lcnn_jax.config import STRATEGIES
from lcnn_jax.plots import STYLE, curves_plot, pyplot
from lcnn_jax.tables import html_table, markdown_table

# Strategies in table and legend order: the unscaled base first.
STRATEGY_ORDER = ("none",) + STRATEGIES
# What identifies a point of a sweep: everything but the seed. A search's candidates differ only
# in their coefficients and its scale-up only in phi, so those are part of it.
GROUP_KEYS = ("strategy", "target", "phi", "alpha", "beta", "gamma")
AVERAGED = ("macs", "params", "activations", "eval_latency_ms", "train_img_per_s", "wall_s", "realised_ratio",
            "effective_macs", "effective_params", "model_bytes", "ptq_top1", "ptq_agreement", "ptq_model_bytes")


def finished(rows: list[dict], metric: str) -> list[dict]:
    """Rows of completed runs that have the metric."""
    return [r for r in rows if r.get("state") == "completed" and r.get(metric) is not None]


def seed_average(rows: list[dict], metric: str, keys: tuple[str, ...]) -> list[dict]:
    """One point per distinct `keys`: metric mean/std/n over completed seeds, means of AVERAGED.

    Groups whose runs all diverged are kept with mean None and their `diverged` count, so a
    table can say so instead of silently dropping them.
    """
    groups: dict[tuple, list[dict]] = collections.defaultdict(list)
    for r in rows:
        if r.get("state", "completed") in ("completed", "diverged"):
            groups[tuple(r.get(k) for k in keys)].append(r)
    out = []
    for key, rs in groups.items():
        values = [float(r[metric]) for r in rs if r.get("state", "completed") == "completed" and r.get(metric) is not None]
        point = dict(zip(keys, key), n=len(values), diverged=sum(r.get("state") == "diverged" for r in rs),
                     mean=statistics.fmean(values) if values else None,
                     std=statistics.stdev(values) if len(values) > 1 else 0.0)
        for k in AVERAGED:
            xs = [float(r[k]) for r in rs if r.get(k) is not None]
            point[k] = statistics.fmean(xs) if xs else None
        out.append(point)
    return out


def aggregate(rows: list[dict], metric: str = "ema_top1") -> list[dict]:
    """Seed-averaged points of a sweep by strategy and target (and phi/coefficients), each with a series label."""
    groups = seed_average(rows, metric, GROUP_KEYS)
    coefficient_sets = collections.defaultdict(set)
    for g in groups:
        coefficient_sets[g["strategy"]].add((g["alpha"], g["beta"], g["gamma"]))
    for g in groups:
        # Several coefficient sets of one strategy (a search's candidates) are separate curves.
        several = len(coefficient_sets[g["strategy"]]) > 1
        g["series"] = (f"{g['strategy']} α={g['alpha']:g} β={g['beta']:g} γ={g['gamma']:.3f}" if several
                       else g["strategy"])
    rank = {s: i for i, s in enumerate(STRATEGY_ORDER)}
    return sorted(groups, key=lambda g: (rank.get(g["strategy"], 99), g["series"], g["phi"] or 0.0, g["target"]))


def is_base(g: dict) -> bool:
    """Whether a point is the unscaled base (strategy none; target 1 resolves to it)."""
    return g["strategy"] == "none"


def strategy_curves(groups: list[dict]) -> dict[str, list[dict]]:
    """Curves by series; every scaled curve starts at the shared base point."""
    base = [g for g in groups if is_base(g) and g["mean"] is not None]
    curves: dict[str, list[dict]] = {}
    for g in groups:
        if g["mean"] is not None and not is_base(g):
            curves.setdefault(g["series"], list(base)).append(g)
    return curves or ({"none": base} if base else {})


def target_label(g: dict) -> str:
    """'2' for a MACs target, 'φ=1' for a compound run scaled by phi."""
    return f"φ={g['phi']:g}" if g.get("phi") is not None else f"{g['target']:g}"


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by one with lower-or-equal cost and higher accuracy (cost ascending)."""
    front, best = [], -math.inf
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front


def _plot(groups: list[dict], x: str, xlabel: str, path: Path, metric: str, title: str) -> Path | None:
    return curves_plot(strategy_curves(groups), x, xlabel, f"{metric} (%)", path, f"{title}: mean ± std over seeds",
                       logx=x == "macs")


def _pareto_plot(rows: list[dict], metric: str, path: Path, title: str) -> Path | None:
    plt = pyplot()
    rs = [r for r in finished(rows, metric) if r.get("macs")]
    if not rs:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for strategy in dict.fromkeys(r["strategy"] for r in rs):
        color, marker = STYLE.get(strategy, ("gray", "x"))
        sel = [r for r in rs if r["strategy"] == strategy]
        ax.scatter([r["macs"] for r in sel], [100 * r[metric] for r in sel], color=color, marker=marker,
                   label=strategy, s=22, alpha=0.8)
    front = pareto_front([(float(r["macs"]), float(r[metric])) for r in rs])
    ax.step([c for c, _ in front], [100 * a for _, a in front], where="post", color="black", linewidth=1,
            label="Pareto front")
    ax.set_xscale("log")
    ax.set_title(f"{title}: every run and the Pareto front", fontsize=10)
    ax.set_xlabel("MACs per image (log)")
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


TABLE_HEADERS = ("strategy", "target", "realised", "MACs", "params", "mean ± std (%)", "seeds")


def table_rows(groups: list[dict]) -> list[tuple]:
    """strategy x target rows: realised MACs multiple, MACs, params, metric mean +- std over seeds."""
    return [(g["series"], target_label(g), f"{g['realised_ratio'] or 1:.3f}", f"{g['macs'] / 1e6:.2f}M",
             f"{g['params'] / 1e6:.3f}M",
             f"{100 * g['mean']:.2f} ± {100 * g['std']:.2f}" if g["mean"] is not None else f"diverged ({g['diverged']} runs)",
             g["n"]) for g in groups]


def table(groups: list[dict], metric: str) -> str:
    """Markdown: strategy x target with mean +- std of `metric` over seeds."""
    headers = TABLE_HEADERS[:5] + (f"{metric} % (mean ± std)", "seeds")
    return markdown_table(headers, table_rows(groups), right=(False,) + (True,) * 6)


def write_report(rows: list[dict], out: Path, title: str, metric: str = "ema_top1", wandb_cfg=None) -> Path:
    """Write the PNGs, table.md and report.html into `out`; mirror them to wandb; return report.html."""
    out.mkdir(parents=True, exist_ok=True)
    groups = aggregate(rows, metric)
    # Files keep the historical top1_* names whatever the metric; captions and axes name the metric.
    plots = {
        f"{metric} against MACs (EfficientNet Fig. 8 style)": _plot(groups, "macs", "MACs per image (log)", out / "top1_vs_macs.png", metric, title),
        f"{metric} against params": _plot(groups, "params", "parameters", out / "top1_vs_params.png", metric, title),
        f"{metric} against measured latency": _plot(groups, "eval_latency_ms", "eval latency, batch 1 (ms)", out / "top1_vs_latency.png", metric, title),
        "Pareto front (every run)": _pareto_plot(rows, metric, out / "pareto.png", title),
    }
    (out / "table.md").write_text(table(groups, metric) + "\n")
    states = collections.Counter(r.get("state") for r in rows)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + "</p>",
             "<h2>Mean ± std over seeds</h2>",
             html_table(TABLE_HEADERS[:5] + (f"{metric} % (mean ± std)", "seeds"), table_rows(groups))]
    for caption, png in plots.items():
        if png is not None:
            data = base64.b64encode(png.read_bytes()).decode()
            parts.append(f"<h2>{html.escape(caption)}</h2><img src='data:image/png;base64,{data}' alt='{png.name}'>")
    page = out / "report.html"
    page.write_text("<!doctype html><meta charset='utf-8'><title>" + html.escape(title) + "</title>\n"
                    "<style>body{font-family:sans-serif;max-width:900px;margin:2em auto}"
                    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style>\n"
                    + "\n".join(parts) + "\n")
    if wandb_cfg is not None and wandb_cfg.enabled and wandb_cfg.mode != "disabled":
        _to_wandb(wandb_cfg, out, title, groups, plots, metric)
    return page


def _to_wandb(cfg, out: Path, title: str, groups: list[dict], plots: dict, metric: str) -> None:
    import wandb

    run = wandb.init(project=cfg.project, entity=cfg.entity, group=title, job_type="report", name=f"{title}-report",
                     dir=str(out), mode=cfg.mode, settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
    columns = ["series", "strategy", "target", "phi", "realised", "macs", "params", f"{metric}_mean", f"{metric}_std", "seeds"]
    data = [[g["series"], g["strategy"], g["target"], g["phi"], g["realised_ratio"], g["macs"], g["params"], g["mean"],
             g["std"], g["n"]] for g in groups]
    run.log({"report/table": wandb.Table(columns=columns, data=data),
             **{f"report/{p.stem}": wandb.Image(str(p)) for p in plots.values() if p is not None}})
    run.finish()
