"""MobileNetV1 Table 4: depthwise-separable against full 3x3 convolution."""

from lcnn_jax.experiment import kit

TITLE = "MobileNetV1 Table 4: depthwise-separable vs full convolution"
KIND = "train"
SMOKE_MINUTES = 8

# preset: (label, ImageNet top-1 %, Mult-Adds, params) as printed in Table 4.
PAPER = {"mobilenet_v1_conv": ("Conv MobileNet", 71.7, 4866e6, 29.3e6), "mobilenet_v1": ("MobileNet", 70.6, 569e6, 4.2e6)}


def analyze(result) -> None:
    """table.md (paper | ours | ratio, and our accuracy) and top1_vs_macs.png."""
    pts = {p["model"]: p for p in kit.points(result.rows)}
    table = kit.paper_rows([(label, pts.get(name), name, 1.0, top1, macs, params)
                            for name, (label, top1, macs, params) in PAPER.items()])
    conv, sep = pts.get("mobilenet_v1_conv"), pts.get("mobilenet_v1")
    gap = "not all runs completed"
    if conv and sep:
        gap = (f"Full convolution minus separable: {100 * (conv['mean'] - sep['mean']):+.2f} points top-1 "
               f"(paper: +1.1) for {conv['macs'] / sep['macs']:.1f}x the MACs (paper: 8.6x); seed spread up to "
               f"{100 * max(conv['std'], sep['std']):.2f} points.")
    for p in pts.values():
        p["series"] = PAPER.get(p["model"], (p["model"],))[0]
    kit.accuracy_plot(list(pts.values()), result.out / "top1_vs_macs.png", f"MobileNetV1 Table 4 ({result.size})")
    kit.write_markdown(result.out / "table.md", TITLE, [
        ("Paper | ours", table), ("Accuracy gap", gap)])
