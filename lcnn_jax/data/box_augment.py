"""Box-consistent numpy augmentation for detection: random crop, horizontal flip, scale jitter.

One image at a time (detection images may differ in size): an HWC image, its boxes as normalised
`(x1, y1, x2, y2)` corners (n, 4) and labels (n,). Every geometric change is one pixel window of
the image (`window`), so pixels and boxes always move together; a box survives a window only if
its centre stays inside, is clipped to it, and is dropped if then thinner than `min_size` pixels.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lcnn_jax.data.augment import resize_matrix
from lcnn_jax.errors import ConfigError

_CROP_TRIES = 10  # crops drawn before keeping the whole image (a crop must keep >= 1 box)


def resize_hw(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """An HWC image resized to out_h x out_w (float32; linear, antialiased when shrinking)."""
    h, w, c = image.shape
    x = image.astype(np.float32)
    if (h, w) == (out_h, out_w):
        return x
    rows = (resize_matrix(h, out_h) @ x.reshape(h, w * c)).reshape(out_h, w, c)
    # Width as one plain matrix product too: broadcasting over rows would be out_h tiny products (10x slower).
    cols = resize_matrix(w, out_w) @ rows.transpose(1, 0, 2).reshape(w, out_h * c)
    return cols.reshape(out_w, out_h, c).transpose(1, 0, 2)


def window(image, boxes, labels, x0: int, y0: int, x1: int, y1: int, min_size: float = 1.0):
    """The pixels [y0:y1, x0:x1] (zero outside the image) with the boxes that keep their centre there."""
    h, w, c = image.shape
    out = np.zeros((y1 - y0, x1 - x0, c), image.dtype)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    px = np.asarray(boxes, np.float32).reshape(-1, 4) * np.array([w, h, w, h], np.float32)
    px = px - np.array([x0, y0, x0, y0], np.float32)
    ww, wh = x1 - x0, y1 - y0
    centre = (px[:, :2] + px[:, 2:]) / 2
    inside = (centre[:, 0] >= 0) & (centre[:, 0] < ww) & (centre[:, 1] >= 0) & (centre[:, 1] < wh)
    px = np.clip(px, 0, np.array([ww, wh, ww, wh], np.float32))
    keep = inside & (px[:, 2] - px[:, 0] >= min_size) & (px[:, 3] - px[:, 1] >= min_size)
    scale = np.array([ww, wh, ww, wh], np.float32)
    return out, (px[keep] / scale).astype(np.float32), np.asarray(labels)[keep]


def hflip(image, boxes):
    """Mirror left-right: x -> 1 - x for the pixels and the boxes."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return image[:, ::-1], np.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], axis=1)


def random_crop(image, boxes, labels, rng: np.random.Generator, min_scale: float = 0.3, min_size: float = 1.0):
    """A random window of min_scale..1 of each side (aspect within 2x) that keeps at least one box."""
    h, w, _ = image.shape
    for _ in range(_CROP_TRIES):
        sw = rng.uniform(min_scale, 1.0)
        sh = float(np.clip(rng.uniform(min_scale, 1.0), sw / 2, min(sw * 2, 1.0)))
        cw, ch = max(1, int(round(sw * w))), max(1, int(round(sh * h)))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        out = window(image, boxes, labels, x0, y0, x0 + cw, y0 + ch, min_size)
        if len(out[1]) or not len(boxes):
            return out
    return image, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels)


def scale_jitter(image, boxes, labels, size: int, rng: np.random.Generator, low: float = 0.75, high: float = 1.25,
                 min_size: float = 1.0):
    """Resize to size*f (f uniform in [low, high], aspect ignored), then pad or crop to size x size at random."""
    side = max(1, int(round(size * rng.uniform(low, high))))
    scaled = resize_hw(image, side, side)  # normalised boxes are unchanged by a resize
    lo, hi = min(0, side - size), max(0, side - size)  # negative offsets pad, positive ones crop
    x0, y0 = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
    return window(scaled, boxes, labels, x0, y0, x0 + size, y0 + size, min_size)


@dataclasses.dataclass(frozen=True)
class BoxAugment:
    """Training augmentation of one detection example: crop (with probability), flip, scale jitter to `size`."""

    crop_prob: float = 0.5
    crop_min_scale: float = 0.3
    flip: bool = True
    jitter_low: float = 0.75  # 1.0 and 1.0 turn scale jitter into a plain resize
    jitter_high: float = 1.25
    min_size: float = 1.0  # boxes thinner than this many pixels after a window are dropped

    def __post_init__(self):
        if not 0 <= self.crop_prob <= 1:
            raise ConfigError(f"crop_prob must be in [0, 1], got {self.crop_prob}")
        if not 0 < self.crop_min_scale <= 1:
            raise ConfigError(f"crop_min_scale must be in (0, 1], got {self.crop_min_scale}")
        if not 0 < self.jitter_low <= self.jitter_high:
            raise ConfigError(f"need 0 < jitter_low <= jitter_high, got {self.jitter_low}, {self.jitter_high}")

    def __call__(self, image, boxes, labels, size: int, rng: np.random.Generator):
        """(uint8 size x size x C image, boxes (n, 4) float32, labels (n,)) after the random transforms."""
        if rng.random() < self.crop_prob:
            image, boxes, labels = random_crop(image, boxes, labels, rng, self.crop_min_scale, self.min_size)
        if self.flip and rng.random() < 0.5:
            image, boxes = hflip(image, boxes)
        image, boxes, labels = scale_jitter(image, boxes, labels, size, rng, self.jitter_low, self.jitter_high,
                                            self.min_size)
        return np.clip(np.round(image), 0, 255).astype(np.uint8), boxes, labels
