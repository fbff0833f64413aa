"""Detector names -> spec, Flax module, training loss and decode: what `task=detection` runs build from.

A `Detector` hides the SSD/YOLO differences from the training loop: `loss(outputs, boxes, labels)`
returns (total, float metrics) and `decode(outputs)` returns (boxes (B, N, 4) normalised xyxy,
class scores (B, N, C) without a background column), the input of `lcnn_jax.detect.nms`.
Specs scale with `spec.scale(depth, width, resolution)` (the same knobs as `lcnn_jax.spec.scale`),
so `lcnn_jax.scaling` solves detector scalings as it does classifier ones.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from lcnn_jax.config import ModelConfig
from lcnn_jax.count import Counts, count
from lcnn_jax.detect.ssd import SSD
from lcnn_jax.detect.ssd_loss import ssd_decode, ssd_loss
from lcnn_jax.detect.ssd_spec import SSD_PRESETS, SSDSpec, get_ssd_spec
from lcnn_jax.detect.yolo import YOLO_PRESETS, YoloSpec, YoloV8, get_yolo_spec, yolo_decode
from lcnn_jax.detect.yolo_loss import yolo_loss
from lcnn_jax.errors import ConfigError, unknown_choice
from lcnn_jax.presets import list_presets

DetectorSpec = SSDSpec | YoloSpec


def list_detectors() -> list[str]:
    """Every detector name: the SSD/SSDLite presets, then the YOLOv8 scales."""
    return list(SSD_PRESETS) + list(YOLO_PRESETS)


def is_detector(name: str) -> bool:
    """Whether `name` is a detector (as opposed to a classifier preset)."""
    return name in SSD_PRESETS or name in YOLO_PRESETS


def check_model_name(name: str, task: str) -> None:
    """Raise a one-line ConfigError unless `name` is a model of `task`'s kind."""
    if task == "detection" and not is_detector(name):
        if name in list_presets():
            raise ConfigError(f"model.name {name!r} is a classifier; task=detection needs a detector: "
                              f"{', '.join(list_detectors())}")
        raise unknown_choice("detector", name, list_detectors())
    if task != "detection" and is_detector(name):
        raise ConfigError(f"model.name {name!r} is a detector: set task=detection, or use a classifier "
                          f"(lcnn models)")


def detector_spec(model: ModelConfig, num_classes: int) -> DetectorSpec:
    """The spec of `model.name` for `num_classes` classes with model.width/depth/resolution applied."""
    check_model_name(model.name, "detection")
    if model.init_from:
        raise ConfigError("model.init_from loads classifier checkpoints; it cannot start a detector")
    if model.name in SSD_PRESETS:
        spec = get_ssd_spec(model.name, num_classes, padding=model.padding)
        if model.bn_momentum is not None:
            bb = spec.backbone
            spec = spec.replace(backbone=bb.replace(bn=dataclasses.replace(bb.bn, momentum=model.bn_momentum)))
    else:
        spec = get_yolo_spec(model.name, num_classes)
        if model.bn_momentum is not None:
            spec = dataclasses.replace(spec, bn=dataclasses.replace(spec.bn, momentum=model.bn_momentum))
    return spec.scale(depth=model.depth or 1.0, width=model.width or 1.0, resolution=model.resolution)


def in_channels(spec: DetectorSpec) -> int:
    """Input channels the detector expects."""
    return spec.backbone.in_channels if isinstance(spec, SSDSpec) else spec.in_channels


@dataclasses.dataclass(frozen=True)
class Detector:
    """A detector's module plus the loss and decode that go with its outputs."""

    spec: DetectorSpec
    module: nn.Module
    loss: Callable  # (outputs, gt boxes (B, G, 4), gt labels (B, G)) -> (total, {name: scalar})
    decode: Callable  # outputs -> (boxes (B, N, 4) xyxy in [0, 1], scores (B, N, C))


def _float_metrics(total, parts: dict) -> tuple[jax.Array, dict]:
    # Counts such as num_pos come back as ints; the train loop averages every metric as a float.
    return total, {k: jnp.asarray(v, jnp.float32) for k, v in parts.items() if k != "loss"}


def build_detector(spec: DetectorSpec, impl: str = "auto") -> Detector:
    """The module, loss and decode of `spec`."""
    if isinstance(spec, SSDSpec):
        return Detector(spec, SSD(spec, impl=impl), lambda out, b, l: _float_metrics(*ssd_loss(spec, out, b, l)),
                        functools.partial(ssd_decode, spec))
    if isinstance(spec, YoloSpec):
        return Detector(spec, YoloV8(spec, impl=impl), lambda out, b, l: _float_metrics(*yolo_loss(spec, out, b, l)),
                        functools.partial(yolo_decode, spec))
    raise ConfigError(f"not a detector spec: {type(spec).__name__}")


@functools.lru_cache(maxsize=1024)
def count_detector(spec: DetectorSpec) -> Counts:
    """MACs/params of the detector at batch 1 and its resolution (memoised: specs are frozen)."""
    x = jax.ShapeDtypeStruct((1, spec.resolution, spec.resolution, in_channels(spec)), jnp.float32)
    return count(build_detector(spec).module, x, train=False)
