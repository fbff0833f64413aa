"""Sweep report: accuracy against MACs, params and latency per strategy, the Pareto front, a table.

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

from lcnn_jax.plots import STYLE, curves_plot, pyplot
from lcnn_jax.tables import markdown_table

STRATEGY_ORDER = ("none", "depth", "width", "resolution", "compound", "fast_compound")


def finished(rows: list[dict], metric: str) -> list[dict]:
    """Rows of completed runs that have the metric."""
    return [r for r in rows if r.get("state") == "completed" and r.get(metric) is not None]


def aggregate(rows: list[dict], metric: str = "ema_top1") -> list[dict]:
    """Mean and std over seeds of each (strategy, target) group, with its mean MACs/params/latency."""
    groups: dict[tuple, list[dict]] = collections.defaultdict(list)
    for r in finished(rows, metric):
        groups[(r["strategy"], float(r["target"]))].append(r)
    out = []
    for (strategy, target), rs in groups.items():
        vals = [float(r[metric]) for r in rs]

        def mean(key):
            xs = [float(r[key]) for r in rs if r.get(key) is not None]
            return statistics.fmean(xs) if xs else None

        out.append(dict(strategy=strategy, target=target, n=len(rs), mean=statistics.fmean(vals),
                        std=statistics.stdev(vals) if len(vals) > 1 else 0.0, macs=mean("macs"),
                        params=mean("params"), latency=mean("eval_latency_ms"), ratio=mean("realised_ratio")))
    rank = {s: i for i, s in enumerate(STRATEGY_ORDER)}
    return sorted(out, key=lambda g: (rank.get(g["strategy"], 99), g["target"]))


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points not dominated by one with lower-or-equal cost and higher accuracy (cost ascending)."""
    front, best = [], -math.inf
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((cost, acc))
            best = acc
    return front


def _plot(groups: list[dict], x: str, xlabel: str, path: Path, metric: str, base: dict | None, title: str) -> Path | None:
    curves: dict[str, list[dict]] = {}
    for g in groups:
        curves.setdefault(g["strategy"], []).append(g)
    if base:  # every curve starts at the shared base model
        curves = {k: v if k == "none" else [base] + v for k, v in curves.items()}
    return curves_plot(curves, x, xlabel, f"{metric} (%)", path, f"{title}: mean ± std over seeds", logx=x == "macs")


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


def table(groups: list[dict], metric: str) -> str:
    """Markdown: strategy x target with mean +- std over seeds, realised MACs multiple, MACs, params."""
    rows = [(g["strategy"], f"{g['target']:g}", f"{g['ratio']:.3f}" if g["ratio"] else "1.000", f"{g['macs'] / 1e6:.2f}M",
             f"{g['params'] / 1e6:.3f}M", f"{100 * g['mean']:.2f} ± {100 * g['std']:.2f}", g["n"]) for g in groups]
    headers = ("strategy", "target", "realised", "MACs", "params", f"{metric} % (mean ± std)", "seeds")
    return markdown_table(headers, rows, right=(False, True, True, True, True, True, True))


def write_report(rows: list[dict], out: Path, title: str, metric: str = "ema_top1", wandb_cfg=None) -> Path:
    """Write the PNGs, table.md and report.html into `out`; mirror them to wandb; return report.html."""
    out.mkdir(parents=True, exist_ok=True)
    groups = aggregate(rows, metric)
    base = next((g for g in groups if g["strategy"] == "none" or g["target"] == 1.0), None)
    plots = {
        "Top-1 against MACs (EfficientNet Fig. 8 style)": _plot(groups, "macs", "MACs per image (log)", out / "top1_vs_macs.png", metric, base, title),
        "Top-1 against params": _plot(groups, "params", "parameters", out / "top1_vs_params.png", metric, base, title),
        "Top-1 against measured latency": _plot(groups, "latency", "eval latency, batch 1 (ms)", out / "top1_vs_latency.png", metric, base, title),
        "Pareto front (every run)": _pareto_plot(rows, metric, out / "pareto.png", title),
    }
    md = table(groups, metric)
    (out / "table.md").write_text(md + "\n")
    states = collections.Counter(r.get("state") for r in rows)
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + "</p>",
             "<h2>Mean ± std over seeds</h2>", _html_table(groups, metric)]
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


def _html_table(groups: list[dict], metric: str) -> str:
    head = "<tr><th>strategy</th><th>target</th><th>realised</th><th>MACs</th><th>params</th><th>%s (%%)</th><th>seeds</th></tr>" % html.escape(metric)
    body = "".join(
        f"<tr><td style='text-align:left'>{html.escape(g['strategy'])}</td><td>{g['target']:g}</td>"
        f"<td>{(g['ratio'] or 1):.3f}</td><td>{g['macs'] / 1e6:.2f}M</td><td>{g['params'] / 1e6:.3f}M</td>"
        f"<td>{100 * g['mean']:.2f} ± {100 * g['std']:.2f}</td><td>{g['n']}</td></tr>"
        for g in groups
    )
    return f"<table>{head}{body}</table>"


def _to_wandb(cfg, out: Path, title: str, groups: list[dict], plots: dict, metric: str) -> None:
    import wandb

    run = wandb.init(project=cfg.project, entity=cfg.entity, group=title, job_type="report", name=f"{title}-report",
                     dir=str(out), mode=cfg.mode, settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))
    columns = ["strategy", "target", "realised", "macs", "params", f"{metric}_mean", f"{metric}_std", "seeds"]
    data = [[g["strategy"], g["target"], g["ratio"], g["macs"], g["params"], g["mean"], g["std"], g["n"]] for g in groups]
    run.log({"report/table": wandb.Table(columns=columns, data=data),
             **{f"report/{p.stem}": wandb.Image(str(p)) for p in plots.values() if p is not None}})
    run.finish()
