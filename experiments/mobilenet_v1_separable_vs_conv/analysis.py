"""MobileNetV1 Table 4: depthwise-separable against full 3x3 convolution."""

from lcnn_jax.experiment import kit

TITLE = "MobileNetV1 Table 4: depthwise-separable vs full convolution"
KIND = "train"
SMOKE_MINUTES = 8

# preset: (label, preset, width, ImageNet top-1 % as printed in Table 4); counts come from lcnn_jax.published.
PAPER = {"mobilenet_v1_conv": ("Conv MobileNet", "mobilenet_v1_conv", 1.0, 71.7),
         "mobilenet_v1": ("MobileNet", "mobilenet_v1", 1.0, 70.6)}


def analyze(result) -> None:
    """table.md (paper | ours | ratio, and our accuracy gap) and top1_vs_macs.png."""
    kit.paper_pair(result, PAPER, "model", TITLE, "Full convolution minus separable")
