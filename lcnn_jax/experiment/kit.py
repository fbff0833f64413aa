"""Building blocks of experiment analyses: seed-averaged points, paper | ours | ratio tables, plots."""

from __future__ import annotations

from pathlib import Path

from lcnn_jax.plots import curves_plot
from lcnn_jax.published import published_for
from lcnn_jax.sweep.report import aggregate, is_base, seed_average, strategy_curves, table_rows
from lcnn_jax.tables import markdown_table

# What identifies a point of a curve: everything but the seed.
POINT_KEYS = ("series", "model", "width", "depth", "resolution")


def count_preset(name: str, width: float | None = None, depth: float | None = None, resolution: int | None = None):
    """Counts (MACs, params, activations) of a preset at 1000 classes, as the papers count it."""
    from lcnn_jax.presets import get_spec
    from lcnn_jax.scaling import counts

    return counts(get_spec(name, width=width, depth=depth, resolution=resolution))


def points(rows: list[dict], metric: str = "ema_top1", keys: tuple[str, ...] = POINT_KEYS) -> list[dict]:
    """Completed runs averaged over seeds: one dict per distinct `keys` with mean, std, n, macs, params, ..."""
    return [p for p in seed_average(rows, metric, keys) if p["mean"] is not None]


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


def strategy_section(rows: list[dict], paper: dict[str, tuple]) -> tuple[str, list[str], list[dict]]:
    """Markdown table of strategy x target (ours next to the paper's), the compound-vs-rest lines and the points.

    `paper` maps a strategy ("none" for the base) to (label, paper MACs, paper top-1 %).
    """
    groups = aggregate(rows)
    base_macs = paper["none"][1]
    table = []
    for g, ours in zip(groups, table_rows(groups)):
        label, macs, top1 = paper.get(g["strategy"], ("-", None, None))
        table.append(("base" if is_base(g) else g["series"], ours[1], ours[2], ours[3], ours[5], label,
                      f"{macs / base_macs:.2f}x" if macs else "-", "-" if top1 is None else top1))
    md = markdown_table(("strategy", "target", "realised", "MACs", "our top-1 %", "paper row", "paper MACs vs base",
                         "paper top-1 %"), table, right=(False, True, True, True, True, False, True, True))
    pts = [g for g in groups if g["mean"] is not None]
    top = max((g["target"] for g in pts), default=1)
    return md, versus({g["strategy"]: g for g in pts if g["target"] == top}, "compound"), groups


def strategy_plot(groups: list[dict], path: Path, title: str) -> Path | None:
    """Top-1 against MACs, one curve per strategy, each starting at the shared base."""
    return curves_plot(strategy_curves(groups), "macs", "MACs per image (log)", "ema_top1 (%)", path, title, logx=True)


PAPER_ROW_HEADERS = ("model", "paper top-1 %", "our top-1 %", "paper Mult-Adds", "ours", "ratio", "paper params", "ours",
                     "ratio", "our run's MACs")


def paper_rows(entries: list[tuple]) -> str:
    """Markdown paper | ours table; entries are (label, our point or None, preset, width, paper top-1 %).

    Mult-Adds and params are counted at 224 px and 1000 classes and compared with lcnn_jax.published;
    'our run's MACs' is the trained model's.
    """
    rows = []
    for label, p, preset, width, top1 in entries:
        c = count_preset(preset, width=width, resolution=224)
        pub = published_for(preset, width, 224, 1.0, 224)
        rows.append((label, top1, pct(p), millions(pub.macs, 0), millions(c.macs), ratio(c.macs, pub.macs),
                     millions(pub.params, 1), millions(c.params, 2), ratio(c.params, pub.params),
                     millions(p["macs"], 2) if p else "-"))
    return markdown_table(PAPER_ROW_HEADERS, rows, right=(False,) + (True,) * 9)


def paper_pair(result, entries: dict[str, tuple], key: str, title: str, gap_name: str) -> None:
    """table.md and top1_vs_macs.png for two models compared as in a paper table.

    `entries` maps the value of `key` in the rows (a preset or a series) to (label, preset, width,
    paper top-1 %); the gap line ("`gap_name`: ...") compares the first entry with the second, ours and
    the paper's.
    """
    pts = {p[key]: p for p in points(result.rows)}
    table = paper_rows([(label, pts.get(k), preset, width, top1) for k, (label, preset, width, top1) in entries.items()])
    (ka, (_, pa, wa, ta)), (kb, (_, pb, wb, tb)) = list(entries.items())[:2]
    gap = "not all runs completed"
    if ka in pts and kb in pts:
        a, b = pts[ka], pts[kb]
        paper_macs = published_for(pa, wa, 224, 1.0, 224).macs / published_for(pb, wb, 224, 1.0, 224).macs
        gap = (f"{gap_name}: {100 * (a['mean'] - b['mean']):+.2f} points top-1 (paper: {ta - tb:+.1f}) for "
               f"{a['macs'] / b['macs']:.2f}x the MACs (paper: {paper_macs:.2f}x); seed spread up to "
               f"{100 * max(a['std'], b['std']):.2f} points.")
    for k, p in pts.items():
        p["series"] = entries[k][0] if k in entries else k
    accuracy_plot(list(pts.values()), result.out / "top1_vs_macs.png", f"{title} ({result.size})")
    write_markdown(result.out / "table.md", title, [("Paper | ours", table), ("Accuracy gap", gap)])
