"""SSD/SSDLite specs: a MobileNet backbone `NetSpec` plus taps, extra layers, heads and default boxes.

Which TF OD API / torchvision choices the presets follow (sample configs and torchvision source):

* ``ssd_mobilenet_v1`` (TF ``ssd_mobilenet_v1_coco``): taps Conv2d_11 (stride 16, 512) and
  Conv2d_13 (stride 32, 1024); extra layers are full 1x1 + 3x3/s2 convs; the box predictor is a
  **1x1** conv (``kernel_size: 1``). About 6.8M params at 90 classes, as TF's.
* ``ssd_mobilenet_v2`` (TF ``ssd_mobilenet_v2_coco``): taps layer_15/expansion_output (stride 16,
  576) and layer_19 (the 1280 head conv); the feature extractor has ``use_depthwise: true``, so
  the extras are 1x1 + depthwise-separable 3x3/s2 even though the model is not "Lite"; the box
  predictor is a full **3x3** conv, which is where most of its ~16.8M params are.
* ``ssdlite_mobilenet_v2`` (TF ``ssdlite_mobilenet_v2_coco``): as above with depthwise-separable
  3x3 heads (3x3 dw + BN + ReLU6, then a 1x1 conv with bias).
* ``ssdlite_mobilenet_v3_large`` (torchvision ``ssdlite320_mobilenet_v3_large``): taps the
  expansion of the first stride-32 block (672) and the head conv. Like torchvision's COCO model
  and TF's V3_LARGE_DETECTION (MobileNetV3 paper, section 6.3) the last stage is halved
  ("reduced tail": blocks 160 -> 80 wide, expansions 960 -> 480, head conv 960 -> 480). The
  default boxes follow torchvision, not TF: six boxes per cell on every map (no reduced first
  map) and rows clipped to [0, 1]; 3234 boxes at 320. Box order within a cell is TF's
  (1, 2, 1/2, 3, 1/3, interpolated), torchvision's is (1, interpolated, 2, 1/2, 3, 1/3).

Every tap is "the last activation the backbone computes at stride s": for inverted residuals that
is the 1x1 expansion inside the first block of the next stride, as in the papers. Scaling goes
through `lcnn_jax.spec.scale`, and extra-layer widths are `round_filters`-ed from their unscaled
values with the backbone's recorded width, so scaling composes exactly as a `NetSpec` does.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from lcnn_jax.detect.anchors import AnchorSpec, anchor_boxes, feature_map_sizes
from lcnn_jax.errors import ConfigError, unknown_choice
from lcnn_jax.presets import get_spec
from lcnn_jax.spec import Activation, NetSpec, StageSpec, resolve_blocks, round_filters, scale

TapPoint = Literal["stem", "expand", "output", "head"]


@dataclasses.dataclass(frozen=True)
class Tap:
    """Where a feature map comes from: block `block`'s expansion or output, the stem, or the head conv."""

    stride: int
    point: TapPoint
    block: int | None  # index into resolve_blocks(backbone); None for stem/head
    channels: int


@dataclasses.dataclass(frozen=True)
class SSDSpec:
    """A whole SSD: backbone, tapped strides, extra layers, prediction heads and default boxes.

    `num_classes` counts foreground classes; the class head has `num_classes + 1` outputs with
    column 0 the background. `extra_channels` are unscaled: `extra_widths` applies the width.
    """

    name: str
    backbone: NetSpec
    num_classes: int = 90
    taps: tuple[int, ...] = (16, 32)
    extra_channels: tuple[int, ...] = (512, 256, 256, 128)
    lite: bool = False  # depthwise-separable prediction heads
    depthwise_extras: bool = True  # extra layers' 3x3/s2 conv depthwise-separable
    head_kernel: int = 3
    extra_activation: Activation = "relu6"
    anchors: AnchorSpec = AnchorSpec()
    variances: tuple[float, float] = (0.1, 0.2)  # box coder: centre and log-size scale divisors

    def __post_init__(self):
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ConfigError(f"num_classes must be an integer >= 1, got {self.num_classes!r}")
        if self.head_kernel not in (1, 3, 5):
            raise ConfigError(f"head_kernel must be one of 1, 3, 5, got {self.head_kernel!r}")
        if not self.taps or list(self.taps) != sorted(set(self.taps)):
            raise ConfigError(f"taps must be increasing backbone strides, e.g. (16, 32), got {self.taps!r}")

    @property
    def resolution(self) -> int:
        """Input height and width in pixels (the backbone's)."""
        return self.backbone.resolution

    @property
    def width(self) -> float:
        """Width multiplier relative to the preset."""
        return self.backbone.width

    @property
    def depth(self) -> float:
        """Depth multiplier relative to the preset."""
        return self.backbone.depth

    @property
    def extra_widths(self) -> tuple[int, ...]:
        """Output channels of the extra layers at this spec's width."""
        return tuple(round_filters(c, self.backbone.width, self.backbone.divisor) for c in self.extra_channels)

    @property
    def feature_map_sizes(self) -> tuple[int, ...]:
        """Grid size of every predicted feature map, taps first, at `resolution`."""
        return feature_map_sizes(self.resolution, self.taps, len(self.extra_channels))

    @property
    def boxes_per_cell(self) -> tuple[int, ...]:
        """Default boxes per grid cell on each feature map."""
        return self.anchors.boxes_per_cell(len(self.taps) + len(self.extra_channels))

    @property
    def num_anchors(self) -> int:
        """Total default boxes: the N of the (B, N, ...) outputs."""
        return sum(s * s * a for s, a in zip(self.feature_map_sizes, self.boxes_per_cell))

    def scale(self, depth: float = 1.0, width: float = 1.0, resolution: int | None = None) -> SSDSpec:
        """Scale backbone and extra layers by width/depth multipliers and set the resolution."""
        return dataclasses.replace(self, backbone=scale(self.backbone, depth, width, resolution))

    def replace(self, **changes) -> SSDSpec:
        """A copy with fields changed (dataclasses.replace)."""
        return dataclasses.replace(self, **changes)


def resolve_taps(backbone: NetSpec, strides: tuple[int, ...]) -> tuple[Tap, ...]:
    """For each stride, the last activation the backbone computes at that stride."""
    stride = backbone.stem.stride
    acts = [Tap(stride, "stem", None, backbone.stem.out_channels)]
    for i, b in enumerate(resolve_blocks(backbone)):
        if b.type == "mbconv" and b.expanded_channels != b.in_channels:
            acts.append(Tap(stride, "expand", i, b.expanded_channels))  # before the strided depthwise
        stride *= b.stride
        acts.append(Tap(stride, "output", i, b.out_channels))
    if backbone.head.conv is not None:
        stride *= backbone.head.conv.stride
        acts.append(Tap(stride, "head", None, backbone.head.conv.out_channels))
    taps = []
    for s in strides:
        at = [a for a in acts if a.stride == s]
        if not at:
            have = ", ".join(str(x) for x in sorted({a.stride for a in acts}))
            raise ConfigError(f"backbone {backbone.name} has no stride-{s} feature map; strides: {have}")
        taps.append(at[-1])
    return tuple(taps)


def ssd_anchors(spec: SSDSpec) -> np.ndarray:
    """The spec's default boxes, (N, 4) normalised (cx, cy, w, h), cached per (anchors, grid sizes)."""
    return anchor_boxes(spec.anchors, spec.feature_map_sizes)


def reduce_tail(backbone: NetSpec) -> NetSpec:
    """Halve the last stage and the head conv of an unscaled backbone (MobileNetV3 detection tail)."""
    if backbone.base is not None:
        raise ConfigError("reduce_tail needs an unscaled backbone; scale after reducing the tail")
    last = backbone.stages[-1]
    stage = StageSpec(tuple(dataclasses.replace(b, out_channels=b.out_channels // 2) for b in last.blocks))
    head = backbone.head
    if head.conv is not None:
        head = dataclasses.replace(head, conv=dataclasses.replace(head.conv, out_channels=head.conv.out_channels // 2))
    return backbone.replace(stages=backbone.stages[:-1] + (stage,), head=head)


@dataclasses.dataclass(frozen=True)
class SSDPreset:
    """A named detector: backbone preset, default resolution and the head/extra-layer choices."""

    name: str
    backbone: str
    description: str
    resolution: int = 300
    lite: bool = False
    depthwise_extras: bool = True
    head_kernel: int = 3
    reduced_tail: bool = False
    anchors: AnchorSpec = AnchorSpec()


SSD_PRESETS: dict[str, SSDPreset] = {
    p.name: p
    for p in (
        SSDPreset("ssd_mobilenet_v1", "mobilenet_v1", "SSD, MobileNetV1, 1x1 heads (TF ssd_mobilenet_v1_coco)",
                  depthwise_extras=False, head_kernel=1),
        SSDPreset("ssd_mobilenet_v2", "mobilenet_v2", "SSD, MobileNetV2, 3x3 heads (TF ssd_mobilenet_v2_coco)"),
        SSDPreset("ssdlite_mobilenet_v2", "mobilenet_v2", "SSDLite, MobileNetV2 (TF ssdlite_mobilenet_v2_coco)",
                  lite=True),
        SSDPreset("ssdlite_mobilenet_v3_large", "mobilenet_v3_large",
                  "SSDLite, MobileNetV3-Large, reduced tail (torchvision ssdlite320_mobilenet_v3_large)",
                  resolution=320, lite=True, reduced_tail=True,
                  anchors=AnchorSpec(reduce_lowest=False, clip=True)),
    )
}


def list_ssd_presets() -> list[str]:
    """Names of all SSD presets."""
    return list(SSD_PRESETS)


def get_ssd_spec(
    name: str,
    num_classes: int = 90,
    *,
    resolution: int | None = None,
    width: float = 1.0,
    depth: float = 1.0,
    padding: str | None = None,
) -> SSDSpec:
    """The spec of SSD preset `name` for `num_classes` foreground classes, scaled as asked."""
    if name not in SSD_PRESETS:
        raise unknown_choice("SSD model", name, list_ssd_presets())
    p = SSD_PRESETS[name]
    # Unscaled first: the tail is halved on the base so that width scaling rounds from it.
    backbone = get_spec(p.backbone, width=1.0, depth=1.0, resolution=p.resolution, padding=padding)
    if p.reduced_tail:
        backbone = reduce_tail(backbone)
    spec = SSDSpec(
        name=name,
        backbone=backbone,
        num_classes=num_classes,
        lite=p.lite,
        depthwise_extras=p.depthwise_extras,
        head_kernel=p.head_kernel,
        anchors=p.anchors,
    )
    return spec.scale(depth=depth, width=width, resolution=resolution)
