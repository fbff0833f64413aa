"""EfficientNet Table 7 / Fig. 8: the base scaled by depth, width, resolution or compound at about equal FLOPs."""

from lcnn_jax.experiment import kit

TITLE = "EfficientNet Table 7 / Fig. 8: B0 scaled by depth (d=4), width (w=2), resolution (r=2) and compound"
KIND = "train"
SMOKE_MINUTES = 6

# strategy -> (paper's row, paper FLOPs (= MACs), ImageNet top-1 %) as printed in Table 7.
PAPER = {"none": ("EfficientNet-B0", 0.39e9, 77.1), "depth": ("scale depth (d=4)", 1.8e9, 79.0),
         "width": ("scale width (w=2)", 1.8e9, 78.9), "resolution": ("scale resolution (r=2)", 1.9e9, 79.1),
         "compound": ("compound scale", 1.8e9, 81.1)}


def analyze(result) -> None:
    """table.md and top1_vs_macs.png (Fig. 8 style)."""
    md, lines, groups = kit.strategy_section(result.rows, PAPER)
    kit.strategy_plot(groups, result.out / "top1_vs_macs.png", f"EfficientNet-B0 scaled ({result.size})")
    kit.write_markdown(result.out / "table.md", TITLE, [
        ("Strategy x target, ours next to the paper's", md),
        ("Compound against each single dimension at the largest target", "\n".join(lines)),
    ])
