"""SSD default boxes: the TF Object Detection API `multiple_grid_anchor_generator`, in numpy.

Layer k of m gets the scale s_k = min + (max - min) * k / (m - 1) (and s_m = 1.0). Each grid cell
gets one box per aspect ratio r at scale s_k (width s_k*sqrt(r), height s_k/sqrt(r)), plus one
box of ratio 1 at sqrt(s_k * s_{k+1}). With `reduce_lowest` the first layer instead gets TF's
reduced set: (0.1, 1), (s_0, 2), (s_0, 1/2). Centres sit at ((j + 0.5) / W, (i + 0.5) / H).

Ordering matches the head outputs reshaped from (B, H, W, A*K) to (B, H*W*A, K): layer by
layer, row-major over the grid (y, then x), then the boxes of one cell in spec order.

Anchors are normalised `(cx, cy, w, h)` float32; `centers_to_corners` in lcnn_jax.detect.boxes
turns them into the package's xyxy convention. They are computed once per (spec, grid sizes).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from lcnn_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class AnchorSpec:
    """Scales and aspect ratios of the default boxes on each feature map (TF `ssd_anchor_generator`)."""

    min_scale: float = 0.2
    max_scale: float = 0.95
    aspect_ratios: tuple[float, ...] = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
    interpolated_box: bool = True  # one extra ratio-1 box at sqrt(s_k * s_{k+1}) per cell
    reduce_lowest: bool = True  # TF: 3 boxes on the first map; torchvision: the full set everywhere
    clip: bool = False  # torchvision clips the (cx, cy, w, h) rows to [0, 1]; TF does not

    def box_specs(self, num_layers: int) -> tuple[tuple[tuple[float, float], ...], ...]:
        """Per layer, the (scale, aspect ratio) of each box in one grid cell."""
        if num_layers < 1:
            raise ConfigError(f"anchors need at least one feature map, got {num_layers}")
        if not (0.0 < self.min_scale <= self.max_scale):
            raise ConfigError(f"anchor scales need 0 < min_scale <= max_scale, got {self.min_scale}, {self.max_scale}")
        if num_layers == 1:
            scales = [self.min_scale, 1.0]
        else:
            step = (self.max_scale - self.min_scale) / (num_layers - 1)
            scales = [self.min_scale + step * k for k in range(num_layers)] + [1.0]
        layers = []
        for k in range(num_layers):
            s, s_next = scales[k], scales[k + 1]
            if k == 0 and self.reduce_lowest:
                layers.append(((0.1, 1.0), (s, 2.0), (s, 0.5)))
                continue
            boxes = [(s, r) for r in self.aspect_ratios]
            if self.interpolated_box:
                boxes.append((math.sqrt(s * s_next), 1.0))
            layers.append(tuple(boxes))
        return tuple(layers)

    def boxes_per_cell(self, num_layers: int) -> tuple[int, ...]:
        """How many default boxes each cell of each feature map has (the head's anchors per location)."""
        return tuple(len(b) for b in self.box_specs(num_layers))


def feature_map_sizes(resolution: int, strides: tuple[int, ...], num_extra: int) -> tuple[int, ...]:
    """Grid sizes of the tapped maps at these strides, then of `num_extra` stride-2 extra layers.

    Both padding modes give ceil(n / 2) per stride-2 conv, so a stride-s map is ceil(n / s).
    """
    sizes = [-(-resolution // s) for s in strides]
    for _ in range(num_extra):
        sizes.append(-(-sizes[-1] // 2))
    return tuple(sizes)


@functools.lru_cache(maxsize=64)
def anchor_boxes(spec: AnchorSpec, sizes: tuple[int, ...]) -> np.ndarray:
    """All default boxes for square feature maps of these sizes: (N, 4) normalised (cx, cy, w, h).

    Cached and read-only: every loss and decode call at one resolution shares one array.
    """
    rows = []
    for size, boxes in zip(sizes, spec.box_specs(len(sizes))):
        scales = np.array([s for s, _ in boxes])
        ratios = np.sqrt(np.array([r for _, r in boxes]))
        centres = (np.arange(size) + 0.5) / size
        cy, cx = np.meshgrid(centres, centres, indexing="ij")
        a = len(boxes)
        cell = np.stack([scales * ratios, scales / ratios], axis=-1)  # (A, 2) widths, heights
        grid = np.stack([cx, cy], axis=-1).reshape(size * size, 1, 2)
        rows.append(
            np.concatenate([np.broadcast_to(grid, (size * size, a, 2)), np.broadcast_to(cell, (size * size, a, 2))], -1)
            .reshape(-1, 4)
        )
    out = np.concatenate(rows).astype(np.float32)
    if spec.clip:
        out = np.clip(out, 0.0, 1.0)
    out.setflags(write=False)
    return out
