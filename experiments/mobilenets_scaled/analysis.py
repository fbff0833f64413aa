"""EfficientNet Table 3: MobileNetV1 and MobileNetV2 scaled up by one dimension or compound, at about 4x MACs."""

from lcnn_jax.experiment import kit

TITLE = "EfficientNet Table 3: scaling MobileNetV1 and MobileNetV2 (depth, width, resolution, compound)"
KIND = "train"
SMOKE_MINUTES = 11

# series (sweep file): strategy -> (paper's row, paper MACs, ImageNet top-1 %) as printed in Table 3.
PAPER = {
    "mobilenet_v1": {"none": ("MobileNetV1", 0.6e9, 70.6), "width": ("scale width (w=2)", 2.2e9, 74.2),
                     "resolution": ("scale resolution (r=2)", 2.2e9, 72.7),
                     "compound": ("compound (d=1.4, w=1.2, r=1.3)", 2.3e9, 75.6)},
    "mobilenet_v2": {"none": ("MobileNetV2", 0.3e9, 72.0), "depth": ("scale depth (d=4)", 1.2e9, 76.8),
                     "width": ("scale width (w=2)", 1.1e9, 76.4), "resolution": ("scale resolution (r=2)", 1.2e9, 74.8),
                     "compound": ("compound", 1.3e9, 77.4)},
}


def analyze(result) -> None:
    """table.md (per network: strategy x target, ours and the paper's) and one PNG per network."""
    sections = []
    for series, paper in PAPER.items():
        rows = [r for r in result.rows if r["series"] == series]
        if not rows:
            continue
        md, lines, groups = kit.strategy_section(rows, paper)
        kit.strategy_plot(groups, result.out / f"{series}_top1_vs_macs.png", f"{series} scaled ({result.size})")
        sections += [(series, md), (f"{series}: compound against each single dimension at the largest target",
                                    "\n".join(lines))]
    kit.write_markdown(result.out / "table.md", TITLE, sections)
