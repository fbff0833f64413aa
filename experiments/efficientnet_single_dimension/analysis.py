"""EfficientNet Fig. 3: scaling the base network up by width, depth or resolution alone.

The paper's point: each dimension helps, and each saturates (about 80% ImageNet top-1 for B0)
as it grows. A point's multiplier is relative to the smallest value of its series (the base).
"""

from lcnn_jax.experiment import kit

TITLE = "EfficientNet Fig. 3: single-dimension scaling of the base"
KIND = "train"
SMOKE_MINUTES = 14

# The paper prints Fig. 3 as curves, not numbers; its claim is the shape.
PAPER_TREND = "each dimension gains, with diminishing returns; all three flatten near 80% ImageNet top-1"


def saturation(pts: list[dict]) -> str:
    """Top-1 gained per doubling of MACs in the first and the last doubling of a curve."""
    import math

    pts = sorted(pts, key=lambda p: p["macs"])
    if len(pts) < 3:
        return "-"
    first, last = pts[:2], pts[-2:]

    def slope(a, b):
        return 100 * (b["mean"] - a["mean"]) / max(1e-9, math.log2(b["macs"] / a["macs"]))

    return f"{slope(*first):+.2f} → {slope(*last):+.2f}"


def analyze(result) -> None:
    """table.md and top1_vs_macs.png (one curve per dimension, shared base point)."""
    pts = kit.points(result.rows)
    series = kit.by_series(pts)
    rows, summary = [], []
    for name, ps in series.items():  # each series is named after the dimension it scales
        base = min(p[name] for p in ps)
        base_macs = min(p["macs"] for p in ps)
        for p in sorted(ps, key=lambda p: p[name]):
            rows.append((name, f"{p[name] / base:.2f}", f"{p['width']:.3g}", f"{p['depth']:.3g}", p["resolution"],
                         kit.millions(p["macs"], 2), f"{p['macs'] / base_macs:.2f}x", kit.pct(p)))
        best = max(ps, key=lambda p: p["mean"])
        summary.append((name, saturation(ps), kit.pct(best), f"{best[name] / base:.2f}"))
    kit.accuracy_plot(pts, result.out / "top1_vs_macs.png",
                      f"EfficientNet Fig. 3 ({result.size}): single-dimension scaling (saturation)")
    kit.write_markdown(result.out / "table.md", TITLE, [
        ("Every point", kit.markdown_table(("dimension", "multiplier", "width", "depth", "res", "MACs", "vs base", "top-1 %"),
                                           rows, right=(False,) + (True,) * 7)),
        ("Saturation: top-1 points gained per doubling of MACs, first doubling → last", kit.markdown_table(
            ("dimension", "gain per doubling", "best top-1 %", "at multiplier"), summary, right=(False,) + (True,) * 3)),
        ("Paper", PAPER_TREND),
    ])
