"""EfficientNet Fig. 4: width scaling at different depths and resolutions.

The paper's point: at equal FLOPs, scaling width in a deeper and higher-resolution network
(d=2, r=1.3) reaches higher accuracy than width alone (d=1, r=1): the dimensions interact.
"""

from lcnn_jax.experiment import kit

TITLE = "EfficientNet Fig. 4: width scaling at (depth, resolution) = (1, 1), (1, 1.3), (2, 1), (2, 1.3)"
KIND = "train"
SMOKE_MINUTES = 10

LABELS = {"d1_r1": "d=1.0, r=1.0", "d1_r1p3": "d=1.0, r=1.3", "d2_r1": "d=2.0, r=1.0", "d2_r1p3": "d=2.0, r=1.3"}
# The paper prints Fig. 4 as curves; its claim is the ordering.
PAPER_TREND = ("at equal FLOPs the (d=2, r=1.3) curve is highest and (d=1, r=1) lowest: width helps more when "
               "depth and resolution grow with it")


def analyze(result) -> None:
    """table.md and top1_vs_macs.png (one curve per (d, r))."""
    pts = kit.points(result.rows)
    rows, best_rows = [], []
    for name, ps in kit.by_series(pts).items():
        base_w = min(p["width"] for p in ps)
        for p in sorted(ps, key=lambda p: p["width"]):
            rows.append((LABELS.get(name, name), f"{p['width'] / base_w:.2f}", f"{p['width']:.3g}", f"{p['depth']:.3g}",
                         p["resolution"], kit.millions(p["macs"], 2), kit.pct(p)))
        best = max(ps, key=lambda p: p["mean"])
        best_rows.append((LABELS.get(name, name), kit.pct(best), kit.millions(best["macs"], 2)))
        for p in ps:
            p["series"] = LABELS.get(name, name)
    kit.accuracy_plot(pts, result.out / "top1_vs_macs.png", f"EfficientNet Fig. 4 ({result.size}): width scaling per (d, r)")
    kit.write_markdown(result.out / "table.md", TITLE, [
        ("Every point", kit.markdown_table(("(d, r)", "w multiplier", "width", "depth", "res", "MACs", "top-1 %"), rows,
                                           right=(False,) + (True,) * 6)),
        ("Best point of each curve", kit.markdown_table(("(d, r)", "our best top-1 %", "at MACs"), best_rows,
                                                       right=(False, True, True))),
        ("Paper", PAPER_TREND),
    ])
