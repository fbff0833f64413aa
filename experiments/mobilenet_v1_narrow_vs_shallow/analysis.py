"""MobileNetV1 Table 5: a narrower network against a shallower one at about equal Mult-Adds."""

from lcnn_jax.experiment import kit

TITLE = "MobileNetV1 Table 5: narrow (width 0.75) vs shallow (five 14x14x512 layers removed)"
KIND = "train"
SMOKE_MINUTES = 2

# series (sweep file): (label, preset, width, ImageNet top-1 %, Mult-Adds, params) as printed.
PAPER = {"narrow": ("0.75 MobileNet", "mobilenet_v1", 0.75, 68.4, 325e6, 2.6e6),
         "shallow": ("Shallow MobileNet", "mobilenet_v1_shallow", 1.0, 65.3, 307e6, 2.9e6)}


def analyze(result) -> None:
    """table.md (paper | ours | ratio, and our accuracy) and top1_vs_macs.png."""
    pts = {p["series"]: p for p in kit.points(result.rows)}
    table = kit.paper_rows([(label, pts.get(s), name, width, top1, macs, params)
                            for s, (label, name, width, top1, macs, params) in PAPER.items()])
    narrow, shallow = pts.get("narrow"), pts.get("shallow")
    gap = "not all runs completed"
    if narrow and shallow:
        gap = (f"Narrow minus shallow: {100 * (narrow['mean'] - shallow['mean']):+.2f} points top-1 (paper: +3.1); "
               f"seed spread up to {100 * max(narrow['std'], shallow['std']):.2f} points.")
    for s, p in pts.items():
        p["series"] = PAPER[s][0] if s in PAPER else s
    kit.accuracy_plot(list(pts.values()), result.out / "top1_vs_macs.png", f"MobileNetV1 Table 5 ({result.size})")
    kit.write_markdown(result.out / "table.md", TITLE, [("Paper | ours", table), ("Accuracy gap", gap)])
