"""The preset registry: every named network, its default multipliers, and `get_spec`/`build_model`."""

from __future__ import annotations

import dataclasses
from typing import Callable

from lcnn_jax.errors import ConfigError, unknown_choice
from lcnn_jax.presets import efficientnet, mobilenet
from lcnn_jax.spec import NetSpec, scale, with_padding


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named network: an unscaled base spec plus the defaults a user may override."""

    name: str
    base: Callable[[], NetSpec]
    description: str
    width: float = 1.0
    depth: float = 1.0
    resolution: int = 224
    dropout: float = 0.2
    stochastic_depth: float = 0.0


def _registry() -> dict[str, Preset]:
    presets = [
        Preset("mobilenet_v1", mobilenet.mobilenet_v1, "MobileNetV1, depthwise-separable", dropout=0.001),
        Preset("mobilenet_v1_conv", mobilenet.mobilenet_v1_conv, "MobileNetV1 Table 4: full 3x3 convs", dropout=0.001),
        Preset("mobilenet_v1_shallow", mobilenet.mobilenet_v1_shallow, "MobileNetV1 Table 5: 5 separable layers removed",
               dropout=0.001),
        Preset("mobilenet_v2", mobilenet.mobilenet_v2, "MobileNetV2, inverted residuals"),
        Preset("mobilenet_v3_large", mobilenet.mobilenet_v3_large, "MobileNetV3-Large"),
        Preset("mobilenet_v3_small", mobilenet.mobilenet_v3_small, "MobileNetV3-Small"),
    ]
    for name, (w, d, r, drop) in efficientnet.COEFFICIENTS.items():
        presets.append(
            Preset(
                name,
                lambda name=name: efficientnet.efficientnet_base(name),
                f"EfficientNet-{name[-2:].upper()} (w={w}, d={d}, r={r})",
                width=w, depth=d, resolution=r, dropout=drop, stochastic_depth=0.2,
            )
        )
    return {p.name: p for p in presets}


PRESETS: dict[str, Preset] = _registry()


def list_presets() -> list[str]:
    """Names of all presets, in registry order."""
    return list(PRESETS)


def _rate(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value < 1.0):
        raise ConfigError(f"{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def get_spec(
    name: str,
    *,
    width: float | None = None,
    depth: float | None = None,
    resolution: int | None = None,
    num_classes: int = 1000,
    dropout: float | None = None,
    stochastic_depth: float | None = None,
    padding: str | None = None,
) -> NetSpec:
    """The spec of preset `name`; unset arguments take the preset's defaults (B-model table)."""
    if name not in PRESETS:
        raise unknown_choice("model", name, list_presets())
    p = PRESETS[name]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    if resolution is not None and isinstance(resolution, float) and resolution.is_integer():
        resolution = int(resolution)
    base = p.base().replace(
        resolution=p.resolution,
        num_classes=num_classes,
        dropout=_rate("dropout", p.dropout if dropout is None else dropout),
        stochastic_depth=_rate("stochastic_depth", p.stochastic_depth if stochastic_depth is None else stochastic_depth),
    )
    if padding is not None:
        base = with_padding(base, padding)
    return scale(
        base,
        depth=p.depth if depth is None else depth,
        width=p.width if width is None else width,
        resolution=p.resolution if resolution is None else resolution,
    )


def build_model(name: str, *, impl: str = "auto", **overrides):
    """The Flax module for preset `name` (see `get_spec` for the overrides)."""
    from lcnn_jax.net import Net  # flax import kept out of the registry's import path

    return Net(get_spec(name, **overrides), impl=impl)


def describe(spec: NetSpec) -> str:
    """A short 'name w= d= r=' tag for tables and logs."""
    return f"{spec.name} w={spec.width:g} d={spec.depth:g} r={spec.resolution}"


__all__ = ["PRESETS", "Preset", "build_model", "describe", "get_spec", "list_presets"]
