"""Facts about datasets a plan may name before they are prepared: classes and split sizes."""

from __future__ import annotations

# name: (classes, train examples, eval examples) of the train/test (or validation) splits.
KNOWN = {
    "fashion_mnist": (10, 60_000, 10_000),
    "imagenet2012": (1000, 1_281_167, 50_000),
    "cifar10": (10, 50_000, 10_000),
    "cifar100": (100, 50_000, 10_000),
    "imagenette": (10, 9_469, 3_925),
}
