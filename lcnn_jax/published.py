"""Published Mult-Adds and parameter counts (1000 classes), for paper | ours | ratio tables.

Paper figures are rounded as printed; `exact=True` rows are exact reference-code counts. Where a
paper and its reference code disagree, the code's number is listed and the source says so.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Published:
    """One published (MACs, params) pair for a preset at a width and resolution."""

    model: str
    width: float | None  # None: the preset's default
    resolution: int | None
    macs: float
    params: float
    source: str
    exact: bool = False


PUBLISHED: tuple[Published, ...] = (
    Published("mobilenet_v1", 1.0, 224, 568_740_352, 4_231_976, "TF-slim reference count", exact=True),
    Published("mobilenet_v1", 0.75, 224, 325e6, 2.6e6, "MobileNetV1 Table 6"),
    Published("mobilenet_v1", 0.5, 224, 149e6, 1.3e6, "MobileNetV1 Table 6"),
    Published("mobilenet_v1", 0.25, 224, 41e6, 0.5e6, "MobileNetV1 Table 6"),
    Published("mobilenet_v1", 1.0, 192, 418e6, 4.2e6, "MobileNetV1 Table 7"),
    Published("mobilenet_v1", 1.0, 160, 290e6, 4.2e6, "MobileNetV1 Table 7"),
    Published("mobilenet_v1", 1.0, 128, 186e6, 4.2e6, "MobileNetV1 Table 7"),
    Published("mobilenet_v1_conv", 1.0, 224, 4866e6, 29.3e6, "MobileNetV1 Table 4"),
    Published("mobilenet_v1_shallow", 1.0, 224, 307e6, 2.9e6, "MobileNetV1 Table 5"),
    Published("mobilenet_v2", 1.0, 224, 300_774_272, 3_504_872, "timm/TF-slim reference count", exact=True),
    Published("mobilenet_v2", 1.4, 224, 582e6, 6.11e6, "TF-slim README (MACs), timm (params); paper's 6.9M is not reproducible"),
    Published("mobilenet_v2", 0.5, 224, 97e6, 1.95e6, "TF-slim README"),
    Published("mobilenet_v2", 0.35, 224, 59e6, 1.7e6, "TF-slim README"),
    Published("mobilenet_v3_large", 1.0, 224, 219e6, 5.4e6, "MobileNetV3 Table 3"),
    Published("mobilenet_v3_large", 0.75, 224, 155e6, 4.0e6, "MobileNetV3 Table 3"),
    Published("mobilenet_v3_small", 1.0, 224, 56e6, 2.5e6, "MobileNetV3 Table 3"),
    Published("mobilenet_v3_small", 0.75, 224, 44e6, 2.0e6, "MobileNetV3 Table 3"),
    Published("efficientnet_b0", None, None, 385_814_752, 5_288_548, "tensorflow/tpu reference count", exact=True),
    Published("efficientnet_b1", None, None, 0.70e9, 7.8e6, "EfficientNet Table 2"),
    Published("efficientnet_b2", None, None, 1.0e9, 9.2e6, "EfficientNet Table 2"),
    Published("efficientnet_b3", None, None, 1.8e9, 12e6, "EfficientNet Table 2"),
    Published("efficientnet_b4", None, None, 4.2e9, 19e6, "EfficientNet Table 2"),
    Published("efficientnet_b5", None, None, 9.9e9, 30e6, "EfficientNet Table 2"),
    Published("efficientnet_b6", None, None, 19e9, 43e6, "EfficientNet Table 2"),
    Published("efficientnet_b7", None, None, 37e9, 66e6, "EfficientNet Table 2"),
)


def published_for(model: str, width: float, resolution: int, default_width: float, default_resolution: int):
    """The published row for this model/width/resolution, or None."""
    for p in PUBLISHED:
        w = default_width if p.width is None else p.width
        r = default_resolution if p.resolution is None else p.resolution
        if p.model == model and abs(w - width) < 1e-9 and r == resolution:
            return p
    return None
