"""MobileNetV1 Table 5: a narrower network against a shallower one at about equal Mult-Adds."""

from lcnn_jax.experiment import kit

TITLE = "MobileNetV1 Table 5: narrow (width 0.75) vs shallow (five 14x14x512 layers removed)"
KIND = "train"
SMOKE_MINUTES = 2

# series (sweep file): (label, preset, width, ImageNet top-1 % as printed); counts come from lcnn_jax.published.
PAPER = {"narrow": ("0.75 MobileNet", "mobilenet_v1", 0.75, 68.4),
         "shallow": ("Shallow MobileNet", "mobilenet_v1_shallow", 1.0, 65.3)}


def analyze(result) -> None:
    """table.md (paper | ours | ratio, and our accuracy gap) and top1_vs_macs.png."""
    kit.paper_pair(result, PAPER, "series", TITLE, "Narrow minus shallow")
