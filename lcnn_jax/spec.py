"""Declarative architecture specs: stem, stages of blocks, head; and the pure scaling function.

A `NetSpec` holds concrete channel counts and repeats. `scale()` always rounds from the unscaled
base spec (kept in `NetSpec.base`), so scaling twice composes the multipliers instead of
compounding rounding errors. `resolve_blocks()` expands a spec into the per-block list that
`lcnn_jax.net.Net` is built from.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from lcnn_jax.errors import ConfigError

Activation = Literal["relu", "relu6", "hard_swish", "swish", "linear"]
Padding = Literal["same", "symmetric"]
BlockType = Literal["separable", "mbconv", "conv"]
WidthRule = Literal["scale", "no_shrink", "fixed"]

ACTIVATIONS = ("relu", "relu6", "hard_swish", "swish", "linear")
PADDINGS = ("same", "symmetric")
BLOCK_TYPES = ("separable", "mbconv", "conv")
# Depthwise/pointwise conv formulations (lcnn_jax.convs); "auto" picks per backend.
IMPLS = ("auto", "native", "shifted", "fused")


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round `value` to the nearest multiple of `divisor`, never below `divisor` or 90% of `value`."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """EfficientNet/MobileNet channel rounding: `make_divisible(channels * width, divisor)`."""
    return make_divisible(channels * width, divisor)


def round_repeats(repeats: int, depth: float) -> int:
    """EfficientNet depth rounding: `ceil(repeats * depth)`."""
    # The small epsilon keeps e.g. 3 * 1.1 = 3.3000000000000003 from being read as 3.3 + ulp;
    # ceil of an exact product must not jump by one because of float noise.
    return int(math.ceil(repeats * depth - 1e-9))


@dataclasses.dataclass(frozen=True)
class SESpec:
    """Squeeze-and-excite: how the reduced width is computed and which nonlinearities it uses."""

    ratio: float = 0.25
    reduce_from: Literal["input", "expanded"] = "input"  # EfficientNet: block input; V3: expanded
    divisor: int | None = None  # None: max(1, int(c * ratio)); else make_divisible(c * ratio)
    activation: Activation = "swish"
    gate: Literal["sigmoid", "hard_sigmoid"] = "sigmoid"

    def reduced_channels(self, in_channels: int, expanded_channels: int) -> int:
        """Channels of the squeezed representation for a block with these in/expanded widths."""
        base = in_channels if self.reduce_from == "input" else expanded_channels
        if self.divisor is None:
            return max(1, int(base * self.ratio))
        return make_divisible(base * self.ratio, self.divisor)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One row of a stage: `repeats` blocks of one type; only the first has `stride`."""

    type: BlockType
    kernel: int
    stride: int
    out_channels: int
    repeats: int = 1
    expansion: float = 1.0  # mbconv only: expanded = make_divisible(in * expansion)
    se: SESpec | None = None
    activation: Activation = "relu"
    padding: Padding = "symmetric"


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """A group of block rows; depth scaling rounds the stage's total repeats."""

    blocks: tuple[BlockSpec, ...]


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """A full convolution + BN + activation (stem, or the 1x1 head conv before pooling)."""

    out_channels: int
    kernel: int = 1
    stride: int = 1
    activation: Activation = "relu"
    padding: Padding = "symmetric"
    width_rule: WidthRule = "scale"  # no_shrink: max(c, round_filters(c, w)); fixed: c


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """Everything after the last stage: optional 1x1 conv+BN, pool, optional pre-logits conv, dense."""

    conv: ConvSpec | None = None
    pre_logits: int | None = None  # MobileNetV3: 1x1 conv with bias, no BN, after pooling; fixed width
    pre_logits_activation: Activation = "hard_swish"


@dataclasses.dataclass(frozen=True)
class BatchNormSpec:
    """BN hyper-parameters in Flax convention: momentum is the running-average decay."""

    momentum: float = 0.99
    epsilon: float = 1e-3


@dataclasses.dataclass(frozen=True)
class NetSpec:
    """A whole classification network. `width`/`depth` record the multipliers relative to `base`."""

    name: str
    stem: ConvSpec
    stages: tuple[StageSpec, ...]
    head: HeadSpec
    resolution: int = 224
    num_classes: int = 1000
    dropout: float = 0.0
    stochastic_depth: float = 0.0
    bn: BatchNormSpec = BatchNormSpec()
    in_channels: int = 3
    divisor: int = 8
    width: float = 1.0
    depth: float = 1.0
    base: NetSpec | None = None  # the unscaled spec this one was scaled from; None for a base

    @property
    def total_stride(self) -> int:
        """Product of all strides: the input is reduced by this factor before pooling."""
        stride = self.stem.stride
        for stage in self.stages:
            for block in stage.blocks:
                stride *= block.stride
        return stride

    @property
    def num_blocks(self) -> int:
        """Number of blocks after expanding repeats."""
        return sum(b.repeats for s in self.stages for b in s.blocks)

    def replace(self, **changes) -> NetSpec:
        """A copy with fields changed (dataclasses.replace)."""
        return dataclasses.replace(self, **changes)


def scale_stage_depth(repeats: tuple[int, ...], depth: float) -> tuple[int, ...]:
    """Scale a stage's rows so their total is `round_repeats(total, depth)`.

    Extra repeats go to the last rows first: the first row usually carries the stride and
    channel change, which is the least sensible block to duplicate. For one-row stages this is
    exactly `round_repeats(n, depth)`.
    """
    remaining = sum(repeats)
    remaining_scaled = round_repeats(remaining, depth)
    scaled = []
    for r in reversed(repeats):
        rs = max(1, round(r / remaining * remaining_scaled))
        scaled.append(rs)
        remaining -= r
        remaining_scaled -= rs
    return tuple(reversed(scaled))


def _check_positive(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


def _scale_conv(conv: ConvSpec, width: float, divisor: int) -> ConvSpec:
    c = conv.out_channels
    if conv.width_rule == "fixed":
        new = c
    elif conv.width_rule == "no_shrink":
        new = max(c, round_filters(c, width, divisor))
    else:
        new = round_filters(c, width, divisor)
    return dataclasses.replace(conv, out_channels=new)


def scale(
    spec: NetSpec, depth: float = 1.0, width: float = 1.0, resolution: int | None = None
) -> NetSpec:
    """Scale `spec` by depth and width multipliers and set its input resolution.

    Multipliers compose: scaling an already scaled spec multiplies onto its recorded `width`
    and `depth` and re-rounds from the unscaled base, so `scale(scale(s, width=2), width=0.5)`
    is `s` again.
    """
    _check_positive("depth", depth)
    _check_positive("width", width)
    base = spec.base or spec
    total_depth, total_width = spec.depth * depth, spec.width * width
    res = spec.resolution if resolution is None else resolution
    if isinstance(res, bool) or not isinstance(res, int) or res < base.total_stride:
        raise ConfigError(
            f"resolution must be an integer >= {base.total_stride} (the network's total stride), got {res!r}"
        )
    stages = []
    for stage in base.stages:
        reps = scale_stage_depth(tuple(b.repeats for b in stage.blocks), total_depth)
        stages.append(
            StageSpec(
                tuple(
                    dataclasses.replace(
                        b, repeats=r, out_channels=round_filters(b.out_channels, total_width, base.divisor)
                    )
                    for b, r in zip(stage.blocks, reps)
                )
            )
        )
    head = base.head
    if head.conv is not None:
        head = dataclasses.replace(head, conv=_scale_conv(head.conv, total_width, base.divisor))
    return dataclasses.replace(
        spec,
        stem=_scale_conv(base.stem, total_width, base.divisor),
        stages=tuple(stages),
        head=head,
        resolution=res,
        width=total_width,
        depth=total_depth,
        base=None if (total_width == 1.0 and total_depth == 1.0) else base,
    )


def with_padding(spec: NetSpec, padding: Padding) -> NetSpec:
    """The same network with every spatial conv using `padding` ('same' = TF, 'symmetric' = k//2)."""
    if padding not in PADDINGS:
        raise ConfigError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")

    def pad_stages(stages):
        return tuple(StageSpec(tuple(dataclasses.replace(b, padding=padding) for b in s.blocks)) for s in stages)

    def pad(s: NetSpec) -> NetSpec:
        head = s.head
        if head.conv is not None:
            head = dataclasses.replace(head, conv=dataclasses.replace(head.conv, padding=padding))
        return dataclasses.replace(
            s, stem=dataclasses.replace(s.stem, padding=padding), stages=pad_stages(s.stages), head=head
        )

    return dataclasses.replace(pad(spec), base=None if spec.base is None else pad(spec.base))


@dataclasses.dataclass(frozen=True)
class ResolvedBlock:
    """One concrete block: every channel count, stride and rate the module needs."""

    stage: int
    index: int  # position within the stage
    type: BlockType
    in_channels: int
    out_channels: int
    expanded_channels: int
    se_channels: int | None
    kernel: int
    stride: int
    activation: Activation
    padding: Padding
    se: SESpec | None
    residual: bool
    drop_path: float


def resolve_blocks(spec: NetSpec) -> tuple[ResolvedBlock, ...]:
    """Expand the stages into blocks with input channels, expansion, SE width and drop-path rate."""
    total = spec.num_blocks
    in_ch = spec.stem.out_channels
    out: list[ResolvedBlock] = []
    for si, stage in enumerate(spec.stages):
        idx = 0
        for row in stage.blocks:
            for r in range(row.repeats):
                stride = row.stride if r == 0 else 1
                if row.type == "mbconv":
                    expanded = in_ch if row.expansion == 1 else make_divisible(in_ch * row.expansion, spec.divisor)
                else:
                    expanded = in_ch
                se_ch = row.se.reduced_channels(in_ch, expanded) if row.se is not None else None
                residual = row.type == "mbconv" and stride == 1 and in_ch == row.out_channels
                # Drop rate grows linearly with the block's global index (EfficientNet convention).
                rate = spec.stochastic_depth * len(out) / total if residual else 0.0
                out.append(
                    ResolvedBlock(
                        stage=si,
                        index=idx,
                        type=row.type,
                        in_channels=in_ch,
                        out_channels=row.out_channels,
                        expanded_channels=expanded,
                        se_channels=se_ch,
                        kernel=row.kernel,
                        stride=stride,
                        activation=row.activation,
                        padding=row.padding,
                        se=row.se,
                        residual=residual,
                        drop_path=rate,
                    )
                )
                in_ch = row.out_channels
                idx += 1
    return tuple(out)
