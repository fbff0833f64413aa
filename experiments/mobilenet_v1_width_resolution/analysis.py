"""MobileNetV1 Tables 6 and 7: the width multiplier and the resolution multiplier.

Counts are at the paper's setting (224..128 px, 1000 classes); accuracy comes from the smoke
(or full) training grid, whose resolutions keep the paper's 224:192:160:128 ratios.
"""

from lcnn_jax.experiment import kit
from lcnn_jax.published import published_for

TITLE = "MobileNetV1 Tables 6/7: width x resolution (Mult-Adds, params, accuracy)"
KIND = "train"
SMOKE_MINUTES = 12

WIDTHS = (1.0, 0.75, 0.5, 0.25)
PAPER_RESOLUTIONS = (224, 192, 160, 128)
# ImageNet top-1 (%) as printed: Table 6 (widths at 224) and Table 7 (resolutions at width 1).
PAPER_TOP1 = {(1.0, 224): 70.6, (0.75, 224): 68.4, (0.5, 224): 63.7, (0.25, 224): 50.6,
              (1.0, 192): 69.1, (1.0, 160): 67.2, (1.0, 128): 64.4}


def counts_table() -> str:
    """paper | ours | ratio for Mult-Adds and params of every width x resolution."""
    rows = []
    for w in WIDTHS:
        for r in PAPER_RESOLUTIONS:
            c = kit.count_preset("mobilenet_v1", width=w, resolution=r)
            p = published_for("mobilenet_v1", w, r, 1.0, 224)
            rows.append((f"{w:g}", r, kit.millions(p.macs, 0) if p else "-", kit.millions(c.macs), kit.ratio(c.macs, p and p.macs),
                         kit.millions(p.params, 1) if p else "-", kit.millions(c.params, 2), kit.ratio(c.params, p and p.params),
                         PAPER_TOP1.get((w, r), "-")))
    return kit.markdown_table(("width", "res", "paper Mult-Adds", "ours", "ratio", "paper params", "ours", "ratio",
                               "paper top-1 %"), rows, right=(True,) * 9)


def analyze(result) -> None:
    """Write table.md (counts at 224..128 and our accuracy grid) and top1_vs_macs.png."""
    pts = kit.points(result.rows)
    resolutions = sorted({p["resolution"] for p in pts}, reverse=True)
    grid = {(round(p["width"], 4), p["resolution"]): p for p in pts}
    acc_rows = []
    for w in WIDTHS:
        row = [f"{w:g}"]
        for i, r in enumerate(resolutions):
            p = grid.get((w, r))
            row.append(f"{kit.pct(p)} ({kit.millions(p['macs'], 2)})" if p else "-")
            paper = PAPER_TOP1.get((w, PAPER_RESOLUTIONS[i])) if i < len(PAPER_RESOLUTIONS) else None
            row[-1] += f" / paper {paper}" if paper else ""
        acc_rows.append(row)
    heads = ("width",) + tuple(f"{r} px (≙ {pr})" for r, pr in zip(resolutions, PAPER_RESOLUTIONS))
    for p in pts:
        p["series"] = f"width {p['width']:g}"
    kit.accuracy_plot(pts, result.out / "top1_vs_macs.png",
                      f"MobileNetV1 width x resolution ({result.size}): one curve per width, points are resolutions")
    kit.write_markdown(result.out / "table.md", TITLE, [
        ("Counts at the paper's setting (224..128 px, 1000 classes)", counts_table()),
        (f"Top-1 (EMA) of our {result.size} runs: % (MACs at that resolution) / paper's ImageNet top-1 where printed",
         kit.markdown_table(heads, acc_rows, right=(True,) * len(heads))),
    ])
