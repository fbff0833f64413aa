"""Building blocks of experiment analyses: seed-averaged points, paper | ours | ratio tables, plots."""

from __future__ import annotations

import collections
import statistics
from pathlib import Path

from lcnn_jax.plots import curves_plot
from lcnn_jax.tables import markdown_table

# What identifies a point of a curve: everything but the seed.
POINT_KEYS = ("series", "model", "width", "depth", "resolution")


def count_preset(name: str, width: float | None = None, depth: float | None = None, resolution: int | None = None):
    """Counts (MACs, params, activations) of a preset at 1000 classes, as the papers count it."""
    from lcnn_jax.count import count_spec
    from lcnn_jax.presets import get_spec

    return count_spec(get_spec(name, width=width, depth=depth, resolution=resolution, num_classes=1000))


def points(rows: list[dict], metric: str = "ema_top1", keys: tuple[str, ...] = POINT_KEYS) -> list[dict]:
    """Completed runs averaged over seeds: one dict per distinct `keys` with mean, std, n, macs, params, ..."""
    groups: dict[tuple, list[dict]] = collections.defaultdict(list)
    for r in rows:
        if r.get("state", "completed") == "completed" and r.get(metric) is not None:
            groups[tuple(r.get(k) for k in keys)].append(r)
    out = []
    for key, rs in groups.items():
        values = [float(r[metric]) for r in rs]
        point = dict(zip(keys, key), n=len(rs), mean=statistics.fmean(values),
                     std=statistics.stdev(values) if len(values) > 1 else 0.0)
        for k in ("macs", "params", "activations", "eval_latency_ms", "train_img_per_s", "wall_s"):
            xs = [float(r[k]) for r in rs if r.get(k) is not None]
            point[k] = statistics.fmean(xs) if xs else None
        out.append(point)
    return out


def by_series(pts: list[dict]) -> dict[str, list[dict]]:
    """Points grouped by their series, in first-seen order."""
    out: dict[str, list[dict]] = {}
    for p in pts:
        out.setdefault(p["series"], []).append(p)
    return out


def pct(point: dict | None) -> str:
    """'mean ± std' in percent (or '-' for a missing point)."""
    if point is None:
        return "-"
    return f"{100 * point['mean']:.2f} ± {100 * point['std']:.2f}" if point["n"] > 1 else f"{100 * point['mean']:.2f}"


def ratio(ours: float, paper: float | None) -> str:
    """ours / paper to three decimals, or '-' without a paper number."""
    return f"{ours / paper:.3f}" if paper else "-"


def millions(x: float | None, digits: int = 1) -> str:
    """12.3M style, '-' for None."""
    return "-" if x is None else f"{x / 1e6:,.{digits}f}M"


def accuracy_plot(pts: list[dict], path: Path, title: str, x: str = "macs", xlabel: str = "MACs per image (log)",
                  metric: str = "ema_top1") -> Path | None:
    """Accuracy (mean ± std over seeds) against `x`, one curve per series."""
    return curves_plot(by_series(pts), x, xlabel, f"{metric} (%)", path, title, logx=x in ("macs", "flops", "params"))


def write_markdown(path: Path, title: str, sections: list[tuple[str, str]]) -> str:
    """A markdown page of (heading, body) sections; returns its text."""
    text = f"# {title}\n\n" + "\n\n".join(f"## {h}\n\n{b}" if h else b for h, b in sections) + "\n"
    path.write_text(text)
    return text




def versus(pts: dict[str, dict], winner: str) -> list[str]:
    """One line per rival: winner minus rival in points, against the larger seed spread of the two."""
    w = pts.get(winner)
    if w is None:
        return [f"no completed {winner} runs"]
    lines = []
    for name, p in pts.items():
        if name == winner:
            continue
        diff = 100 * (w["mean"] - p["mean"])
        spread = 100 * max(w["std"], p["std"])
        verdict = ("within the seed spread" if abs(diff) <= spread else "beyond the seed spread") if spread else "one seed"
        lines.append(f"- {winner} vs {name}: {diff:+.2f} points ({verdict}, spread {spread:.2f}); "
                     f"MACs {w['macs'] / 1e6:.2f}M vs {p['macs'] / 1e6:.2f}M")
    return lines


def strategy_section(rows: list[dict], paper: dict[str, tuple], paper_base_macs: float) -> tuple[str, list[str], list[dict]]:
    """Markdown table of strategy x target (ours next to the paper's), the compound-vs-rest lines and the points.

    `paper` maps a strategy ("none" for the base) to (label, paper MACs, paper top-1 %).
    """
    pts = points(rows, keys=("strategy", "target"))
    for p in pts:
        p["ratio"] = statistics.fmean([float(r["realised_ratio"]) for r in rows if r.get("strategy") == p["strategy"]
                                       and r.get("target") == p["target"] and r.get("realised_ratio") is not None] or [1.0])
    order = {s: i for i, s in enumerate(("none", "depth", "width", "resolution", "compound", "fast_compound"))}
    pts.sort(key=lambda p: (p["target"], order.get(p["strategy"], 9)))
    table = []
    for p in pts:
        label, macs, top1 = paper.get(p["strategy"] if p["target"] != 1 else "none", ("-", None, None))
        table.append((p["strategy"] if p["target"] != 1 else "base", f"{p['target']:g}", f"{p['ratio']:.3f}",
                      millions(p["macs"], 2), pct(p), label, f"{macs / paper_base_macs:.2f}x" if macs else "-",
                      top1 if top1 is not None else "-"))
    # Runs that diverged have no accuracy; say so instead of dropping the row.
    diverged = collections.Counter((r["strategy"], r["target"]) for r in rows if r.get("state") == "diverged")
    for (strategy, target), n in diverged.items():
        if not any(p["strategy"] == strategy and p["target"] == target for p in pts):
            label, macs, top1 = paper.get(strategy, ("-", None, None))
            r = next(r for r in rows if r["strategy"] == strategy and r["target"] == target)
            table.append((strategy, f"{target:g}", f"{float(r.get('realised_ratio') or 1):.3f}", "-", f"diverged ({n} runs)",
                          label, f"{macs / paper_base_macs:.2f}x" if macs else "-", top1 if top1 is not None else "-"))
    md = markdown_table(("strategy", "target", "realised", "MACs", "our top-1 %", "paper row", "paper MACs vs base",
                         "paper top-1 %"), table, right=(False, True, True, True, True, False, True, True))
    top = max((p["target"] for p in pts), default=1)
    at_top = {p["strategy"]: p for p in pts if p["target"] == top}
    return md, versus(at_top, "compound"), pts


def strategy_plot(pts: list[dict], path: Path, title: str) -> Path | None:
    """Top-1 against MACs, one curve per strategy, each starting at the shared base."""
    base = [p for p in pts if p["target"] == 1]
    curves = {}
    for p in pts:
        if p["target"] != 1:
            curves.setdefault(p["strategy"], list(base)).append(p)
    return curves_plot(curves or {"base": base}, "macs", "MACs per image (log)", "ema_top1 (%)", path, title, logx=True)


PAPER_ROW_HEADERS = ("model", "paper top-1 %", "our top-1 %", "paper Mult-Adds", "ours", "ratio", "paper params", "ours",
                     "ratio", "our run's MACs")


def paper_rows(entries: list[tuple]) -> str:
    """Markdown paper | ours table; entries are (label, our point or None, preset, width, paper top-1, MACs, params).

    Counts are at 224 px and 1000 classes, as printed; 'our run's MACs' is the trained model's.
    """
    rows = []
    for label, p, preset, width, top1, macs, params in entries:
        c = count_preset(preset, width=width, resolution=224)
        rows.append((label, top1, pct(p), millions(macs, 0), millions(c.macs), ratio(c.macs, macs), millions(params, 1),
                     millions(c.params, 2), ratio(c.params, params), millions(p["macs"], 2) if p else "-"))
    return markdown_table(PAPER_ROW_HEADERS, rows, right=(False,) + (True,) * 9)
