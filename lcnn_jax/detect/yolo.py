"""YOLOv8 (ultralytics' n/s/m) in Flax: spec, backbone/PAN neck/decoupled DFL head, anchors, decode.

The layout follows ultralytics' yolov8.yaml layer for layer; module names carry the yaml index
(`"4_c2f"` is `model.4`) so a torch checkpoint maps onto the param tree by position. Channels
and repeats come from the yaml's base values through the scale's (depth, width, max_channels)
exactly as ultralytics' `parse_model` does, so `YoloSpec.scale` is the same width/depth/
resolution scaler the classification specs have.

Outputs are raw: per anchor `4 * reg_max` box-distribution logits (l, t, r, b bins) then `nc`
class logits, levels P3/P4/P5 (strides 8/16/32) concatenated in row-major grid order.
`yolo_decode` turns them into normalised xyxy corners (lcnn_jax.detect.boxes convention).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lcnn_jax.errors import ConfigError, unknown_choice
from lcnn_jax.layers import Conv, ConvBN
from lcnn_jax.spec import BatchNormSpec

STRIDES = (8, 16, 32)

# yolov8.yaml base channels (before the width multiple) and C2f repeats (before depth).
_BACKBONE_CHANNELS = (64, 128, 256, 512, 1024)  # stem, then the stride-4/8/16/32 convs
_BACKBONE_REPEATS = (3, 6, 6, 3)  # C2f after each downsampling conv
_NECK_CHANNELS = (512, 256, 512, 1024)  # C2f layers 12, 15, 18, 21
_NECK_REPEATS = 3

# Ultralytics' BN: eps 1e-3, torch momentum 0.03, i.e. a running-average decay of 0.97.
YOLO_BN = BatchNormSpec(momentum=0.97, epsilon=1e-3)


@dataclasses.dataclass(frozen=True)
class YoloSpec:
    """A YOLOv8 scale: multiples and channel cap as in ultralytics' yaml, plus classes/resolution/DFL bins."""

    name: str
    depth_multiple: float
    width_multiple: float
    max_channels: int
    num_classes: int = 80
    resolution: int = 640
    reg_max: int = 16
    in_channels: int = 3
    bn: BatchNormSpec = YOLO_BN

    def channels(self, base: int) -> int:
        """Ultralytics' width rule: ceil(min(base, max_channels) * width / 8) * 8."""
        # Ultralytics rounds *up* to a multiple of 8 (its make_divisible is a ceil), unlike the
        # nearest-with-90%-floor rule of lcnn_jax.spec.make_divisible; the presets are exact
        # multiples either way, the rules differ only for odd width multiples.
        return int(math.ceil(min(base, self.max_channels) * self.width_multiple / 8) * 8)

    # Resolutions must be multiples of the P5 stride: the scaling solver rounds to this step.
    resolution_step: ClassVar[int] = STRIDES[-1]

    @property
    def width(self) -> float:
        """Width multiple relative to the preset of the same name (1 for a custom scale)."""
        preset = YOLO_PRESETS.get(self.name)
        return self.width_multiple / preset.width_multiple if preset else 1.0

    @property
    def depth(self) -> float:
        """Depth multiple relative to the preset of the same name (1 for a custom scale)."""
        preset = YOLO_PRESETS.get(self.name)
        return self.depth_multiple / preset.depth_multiple if preset else 1.0

    def repeats(self, base: int) -> int:
        """Ultralytics' depth rule: max(round(n * depth), 1) for n > 1 (Python's half-to-even round)."""
        return max(round(base * self.depth_multiple), 1) if base > 1 else base

    @property
    def num_outputs(self) -> int:
        """Channels per anchor: 4 * reg_max distribution logits then num_classes logits."""
        return 4 * self.reg_max + self.num_classes

    @property
    def num_anchors(self) -> int:
        """Anchors over P3/P4/P5 at this resolution."""
        return sum((self.resolution // s) ** 2 for s in STRIDES)

    def scale(self, depth: float = 1.0, width: float = 1.0, resolution: int | None = None) -> YoloSpec:
        """This spec with depth/width multiples multiplied and (optionally) a new input resolution."""
        for label, value in (("depth", depth), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{label} must be a finite number > 0, got {value!r}")
        res = self.resolution if resolution is None else resolution
        check_resolution(res)
        return dataclasses.replace(
            self, depth_multiple=self.depth_multiple * depth, width_multiple=self.width_multiple * width, resolution=res
        )


def check_resolution(resolution) -> None:
    """Raise ConfigError unless `resolution` is a positive multiple of 32 (the P5 stride)."""
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0 or resolution % 32:
        raise ConfigError(f"YOLO resolution must be a positive multiple of 32, got {resolution!r}")


# Ultralytics' scales: (depth, width, max_channels).
YOLO_PRESETS: dict[str, YoloSpec] = {
    "yolov8n": YoloSpec("yolov8n", 0.33, 0.25, 1024),
    "yolov8s": YoloSpec("yolov8s", 0.33, 0.50, 1024),
    "yolov8m": YoloSpec("yolov8m", 0.67, 0.75, 768),
}


def get_yolo_spec(name: str, num_classes: int = 80, resolution: int = 640) -> YoloSpec:
    """The preset `name` (see YOLO_PRESETS) with `num_classes` classes at `resolution`."""
    if name not in YOLO_PRESETS:
        raise unknown_choice("YOLO model", name, tuple(YOLO_PRESETS))
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    check_resolution(resolution)
    return dataclasses.replace(YOLO_PRESETS[name], num_classes=num_classes, resolution=resolution)


class Bottleneck(nn.Module):
    """Two 3x3 Conv-BN-SiLU with an identity shortcut when asked and shapes allow."""

    features: int
    shortcut: bool
    bn: BatchNormSpec = YOLO_BN
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = ConvBN(self.features, 3, act="swish", bn=self.bn, impl=self.impl, name="cv1")(x, train)
        y = ConvBN(self.features, 3, act="swish", bn=self.bn, impl=self.impl, name="cv2")(y, train)
        return x + y if self.shortcut and x.shape[-1] == self.features else y


class C2f(nn.Module):
    """CSP bottleneck with two convs: split a 1x1 conv, chain `repeats` bottlenecks, concat every output."""

    features: int
    repeats: int
    shortcut: bool = False
    bn: BatchNormSpec = YOLO_BN
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        hidden = int(self.features * 0.5)
        y = ConvBN(2 * hidden, 1, act="swish", bn=self.bn, impl=self.impl, name="cv1")(x, train)
        ys = [y[..., :hidden], y[..., hidden:]]
        for i in range(self.repeats):
            ys.append(Bottleneck(hidden, self.shortcut, self.bn, self.impl, name=f"m{i}")(ys[-1], train))
        return ConvBN(self.features, 1, act="swish", bn=self.bn, impl=self.impl, name="cv2")(
            jnp.concatenate(ys, axis=-1), train
        )


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: 1x1 halve, three chained 5x5 stride-1 max pools, concat, 1x1."""

    features: int
    pool: int = 5
    bn: BatchNormSpec = YOLO_BN
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        y = ConvBN(x.shape[-1] // 2, 1, act="swish", bn=self.bn, impl=self.impl, name="cv1")(x, train)
        pad = ((self.pool // 2, self.pool // 2),) * 2
        ys = [y]
        for _ in range(3):
            ys.append(nn.max_pool(ys[-1], (self.pool, self.pool), strides=(1, 1), padding=pad))
        return ConvBN(self.features, 1, act="swish", bn=self.bn, impl=self.impl, name="cv2")(
            jnp.concatenate(ys, axis=-1), train
        )


class BiasConv(nn.Module):
    """A 1x1 conv with a bias initialised to a constant (the head's prediction layers)."""

    features: int
    bias_init: float
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = Conv(self.features, 1, impl=self.impl, name="conv")(x)
        return y + self.param("bias", nn.initializers.constant(self.bias_init), (self.features,))


class DetectHead(nn.Module):
    """Decoupled anchor-free head: per level a box branch (4 * reg_max) and a class branch (nc)."""

    spec: YoloSpec
    impl: str = "auto"

    @nn.compact
    def __call__(self, features: list[jax.Array], train: bool = False) -> jax.Array:
        spec = self.spec
        c0 = features[0].shape[-1]
        box_ch = max(16, c0 // 4, spec.reg_max * 4)
        cls_ch = max(c0, min(spec.num_classes, 100))
        outs = []
        for i, (x, stride) in enumerate(zip(features, STRIDES)):
            b, c = x, x
            for j in range(2):
                b = ConvBN(box_ch, 3, act="swish", bn=spec.bn, impl=self.impl, name=f"box{i}_{j}")(b, train)
                c = ConvBN(cls_ch, 3, act="swish", bn=spec.bn, impl=self.impl, name=f"cls{i}_{j}")(c, train)
            # Ultralytics' bias_init: box logits 1.0; class prior of ~5 objects per image spread
            # over the level's cells (ultralytics fixes the image at 640; we use the spec's size).
            b = BiasConv(4 * spec.reg_max, 1.0, self.impl, name=f"box{i}_pred")(b)
            prior = math.log(5 / spec.num_classes / (spec.resolution / stride) ** 2)
            c = BiasConv(spec.num_classes, prior, self.impl, name=f"cls{i}_pred")(c)
            y = jnp.concatenate([b, c], axis=-1)
            outs.append(y.reshape(y.shape[0], -1, y.shape[-1]))
        return jnp.concatenate(outs, axis=1)


def _upsample2(x: jax.Array) -> jax.Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class YoloV8(nn.Module):
    """YOLOv8 detector: images (B, H, W, C) with H, W multiples of 32 to raw outputs (B, N, 4*reg_max+nc)."""

    spec: YoloSpec
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        s, impl = self.spec, self.impl
        if x.shape[1] % 32 or x.shape[2] % 32:
            raise ConfigError(f"YOLO input height and width must be multiples of 32, got {x.shape[1:3]}")

        def conv(i, base, stride):
            return ConvBN(s.channels(base), 3, stride, act="swish", bn=s.bn, impl=impl, name=f"{i}_conv")

        def c2f(i, base, repeats, shortcut):
            return C2f(s.channels(base), s.repeats(repeats), shortcut, s.bn, impl, name=f"{i}_c2f")

        # Backbone (yaml layers 0-9).
        x = conv(0, _BACKBONE_CHANNELS[0], 2)(x, train)
        levels = []
        for k in range(4):
            x = conv(2 * k + 1, _BACKBONE_CHANNELS[k + 1], 2)(x, train)
            x = c2f(2 * k + 2, _BACKBONE_CHANNELS[k + 1], _BACKBONE_REPEATS[k], True)(x, train)
            levels.append(x)
        p3, p4 = levels[1], levels[2]
        p5 = SPPF(s.channels(_BACKBONE_CHANNELS[4]), bn=s.bn, impl=impl, name="9_sppf")(x, train)

        # PAN neck: top-down (10-15) then bottom-up (16-21); C2f without shortcuts.
        h4 = c2f(12, _NECK_CHANNELS[0], _NECK_REPEATS, False)(jnp.concatenate([_upsample2(p5), p4], -1), train)
        o3 = c2f(15, _NECK_CHANNELS[1], _NECK_REPEATS, False)(jnp.concatenate([_upsample2(h4), p3], -1), train)
        o4 = c2f(18, _NECK_CHANNELS[2], _NECK_REPEATS, False)(
            jnp.concatenate([conv(16, _NECK_CHANNELS[1], 2)(o3, train), h4], -1), train
        )
        o5 = c2f(21, _NECK_CHANNELS[3], _NECK_REPEATS, False)(
            jnp.concatenate([conv(19, _NECK_CHANNELS[2], 2)(o4, train), p5], -1), train
        )
        return DetectHead(s, impl, name="22_detect")([o3, o4, o5], train)


def make_anchors(resolution: int, normalized: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Anchor points (N, 2) as (x, y) grid-cell centres and their strides (N,), levels P3..P5 row-major.

    Points are in pixels, or in [0, 1] when `normalized`; the order matches the model's outputs.
    """
    check_resolution(resolution)
    points, strides = [], []
    for stride in STRIDES:
        n = resolution // stride
        centres = (np.arange(n, dtype=np.float32) + 0.5) * stride
        yy, xx = np.meshgrid(centres, centres, indexing="ij")
        points.append(np.stack([xx.ravel(), yy.ravel()], axis=-1))
        strides.append(np.full(n * n, stride, np.float32))
    pts, strd = np.concatenate(points), np.concatenate(strides)
    return (pts / resolution if normalized else pts), strd


def dfl_expectation(logits: jax.Array) -> jax.Array:
    """Expected bin index of each (..., reg_max) distribution: softmax-weighted sum of 0..reg_max-1."""
    bins = jnp.arange(logits.shape[-1], dtype=logits.dtype)
    return jnp.sum(jax.nn.softmax(logits, axis=-1) * bins, axis=-1)


def distances_to_boxes(points: jax.Array, ltrb: jax.Array) -> jax.Array:
    """Corner boxes from anchor points (..., 2) and (left, top, right, bottom) distances (..., 4)."""
    return jnp.concatenate([points - ltrb[..., :2], points + ltrb[..., 2:]], axis=-1)


def boxes_to_distances(points: jax.Array, boxes: jax.Array) -> jax.Array:
    """(left, top, right, bottom) distances from anchor points (..., 2) to corner boxes (..., 4)."""
    return jnp.concatenate([points - boxes[..., :2], boxes[..., 2:] - points], axis=-1)


def split_outputs(spec: YoloSpec, outputs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(box-distribution logits (B, N, 4, reg_max), class logits (B, N, nc)) of raw outputs."""
    if outputs.shape[-1] != spec.num_outputs or outputs.shape[1] != spec.num_anchors:
        raise ConfigError(
            f"YOLO outputs of shape {outputs.shape} do not match spec {spec.name} "
            f"(expected (B, {spec.num_anchors}, {spec.num_outputs}) at resolution {spec.resolution})"
        )
    dist = outputs[..., : 4 * spec.reg_max].reshape(*outputs.shape[:2], 4, spec.reg_max)
    return dist, outputs[..., 4 * spec.reg_max :]


def yolo_decode(spec: YoloSpec, outputs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Raw outputs to (boxes (B, N, 4) normalised xyxy, class scores (B, N, nc) after sigmoid)."""
    dist, logits = split_outputs(spec, outputs)
    points, strides = make_anchors(spec.resolution)
    ltrb = dfl_expectation(dist) * strides[:, None]
    boxes = distances_to_boxes(jnp.asarray(points), ltrb) / spec.resolution
    return boxes, jax.nn.sigmoid(logits)
