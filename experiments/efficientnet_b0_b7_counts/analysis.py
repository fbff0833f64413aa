"""EfficientNet Table 2: params and FLOPs of B0..B7, paper | ours | ratio (counted, not trained)."""

from lcnn_jax.experiment import kit
from lcnn_jax.plots import pyplot
from lcnn_jax.published import PUBLISHED

TITLE = "EfficientNet Table 2: B0-B7 params and FLOPs"
KIND = "count"
SMOKE_MINUTES = 1

# ImageNet top-1 (%) as printed in Table 2 (for reference; this experiment does not train).
PAPER_TOP1 = {"efficientnet_b0": 77.1, "efficientnet_b1": 79.1, "efficientnet_b2": 80.1, "efficientnet_b3": 81.6,
              "efficientnet_b4": 82.9, "efficientnet_b5": 83.6, "efficientnet_b6": 84.0, "efficientnet_b7": 84.3}


def analyze(result) -> None:
    """table.md and paper_vs_ours.png from the counted B0..B7 (1000 classes, own resolutions)."""
    paper = {p.model: p for p in PUBLISHED if p.model.startswith("efficientnet_b")}
    rows, plotted = [], []
    for r in sorted({r["model"]: r for r in result.rows}.values(), key=lambda r: r["model"]):
        p = paper[r["model"]]
        # B0's published row is the reference code's exact count; the paper prints 5.3M / 0.39B.
        p_params, p_macs = (5.3e6, 0.39e9) if r["model"] == "efficientnet_b0" else (p.params, p.macs)
        rows.append((r["model"].replace("efficientnet_", "").upper(), r["resolution"], f"{p_params / 1e6:g}M",
                     f"{r['params'] / 1e6:.2f}M", kit.ratio(r["params"], p_params), f"{p_macs / 1e9:g}B",
                     f"{r['macs'] / 1e9:.3f}B", kit.ratio(r["macs"], p_macs), f"{2 * r['macs'] / 1e9:.2f}B",
                     PAPER_TOP1[r["model"]]))
        plotted.append((rows[-1][0], p_params, r["params"], p_macs, r["macs"]))
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), dpi=120)
    for ax, (label, i, j) in zip(axes, (("params", 1, 2), ("FLOPs (paper) = MACs (ours)", 3, 4))):
        ax.loglog([q[i] for q in plotted], [q[j] for q in plotted], "o")
        for q in plotted:
            ax.annotate(q[0], (q[i], q[j]), fontsize=7, xytext=(3, -8), textcoords="offset points")
        lo, hi = min(q[i] for q in plotted) * 0.8, max(q[i] for q in plotted) * 1.2
        ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8, label="ours = paper")
        ax.set_xlabel(f"paper {label}")
        ax.set_ylabel(f"ours {label}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("EfficientNet B0-B7: our counts against Table 2", fontsize=10)
    fig.tight_layout()
    fig.savefig(result.out / "paper_vs_ours.png")
    plt.close(fig)
    kit.write_markdown(result.out / "table.md", TITLE, [
        ("", "1000 classes, each model at its own resolution. The paper's \"FLOPs\" are multiply-adds, so they are "
             "compared with our MACs; our FLOPs (2 x MACs) are listed separately."),
        ("Paper | ours", kit.markdown_table(
            ("model", "res", "paper params", "ours", "ratio", "paper FLOPs", "our MACs", "ratio", "our FLOPs (2xMACs)",
             "paper top-1 %"), rows, right=(False,) + (True,) * 9)),
    ])
