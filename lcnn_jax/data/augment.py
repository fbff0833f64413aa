"""Batched numpy image transforms: resize, random crop with padding, flips, RandAugment.

Randomness always comes from an explicit `np.random.Generator`, so a batch is a pure function
of (seed, epoch, batch index): the pipeline is deterministic and can resume mid-epoch.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage


@functools.lru_cache(maxsize=64)
def resize_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) weights of linear interpolation, antialiased (widened triangle) when shrinking."""
    scale = in_size / out_size
    support = max(scale, 1.0)
    centers = (np.arange(out_size) + 0.5) * scale - 0.5
    taps = np.arange(in_size)
    w = np.maximum(0.0, 1.0 - np.abs(taps[None, :] - centers[:, None]) / support)
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resize float NHWC images to size x size (separable matrix products, fast for small images)."""
    n, h, w, c = images.shape
    if (h, w) == (size, size):
        return images
    rows = np.matmul(resize_matrix(h, size), images.reshape(n, h, w * c)).reshape(n, size, w, c)
    return np.matmul(resize_matrix(w, size), rows)  # (size, w) @ (..., w, c) -> (n, size, size, c)


def random_crop(images: np.ndarray, padding: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-pad by `padding` and crop back to the original size at a random offset per image."""
    if padding == 0:
        return images
    n, h, w, _ = images.shape
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    dy = rng.integers(0, 2 * padding + 1, n)
    dx = rng.integers(0, 2 * padding + 1, n)
    rows = dy[:, None] + np.arange(h)[None, :]
    cols = dx[:, None] + np.arange(w)[None, :]
    return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirror a random half of the images left-right."""
    flip = rng.random(len(images)) < 0.5
    return np.where(flip[:, None, None, None], images[:, :, ::-1], images)


# --- RandAugment (Cubuk et al. 2020) on uint8 HWC images; magnitude m in [0, 30] ------------

def _affine(img: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x2 linear map about the image centre (plus translation in matrix[:, 2])."""
    h, w = img.shape[:2]
    center = np.array([(h - 1) / 2, (w - 1) / 2])
    lin, shift = matrix[:, :2], matrix[:, 2]
    offset = center - lin @ center + shift
    out = np.empty_like(img)
    for c in range(img.shape[2]):
        out[..., c] = ndimage.affine_transform(img[..., c], lin, offset=offset, order=1, cval=0, mode="constant")
    return out


def _rotate(img, m, sign):
    a = math.radians(30.0 * m / 30 * sign)
    return _affine(img, np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0]]))


def _shear(img, m, sign, axis):
    s = 0.3 * m / 30 * sign
    matrix = np.array([[1, 0, 0], [0, 1, 0]], float)
    matrix[axis, 1 - axis] = s
    return _affine(img, matrix)


def _translate(img, m, sign, axis):
    matrix = np.array([[1, 0, 0], [0, 1, 0]], float)
    matrix[axis, 2] = 0.45 * img.shape[axis] * m / 30 * sign
    return _affine(img, matrix)


def _blend(img, other, factor):
    return np.clip(other + factor * (img.astype(np.float32) - other), 0, 255).astype(np.uint8)


def _autocontrast(img, m, sign):
    lo = img.min(axis=(0, 1), keepdims=True).astype(np.float32)
    hi = img.max(axis=(0, 1), keepdims=True).astype(np.float32)
    scale = np.where(hi > lo, 255.0 / np.maximum(hi - lo, 1), 1.0)
    return np.clip((img - lo) * scale, 0, 255).astype(np.uint8)


def _equalize(img, m, sign):
    out = np.empty_like(img)
    for c in range(img.shape[2]):
        hist = np.bincount(img[..., c].ravel(), minlength=256)
        cdf = hist.cumsum()
        nonzero = cdf[cdf > 0]
        span = cdf[-1] - nonzero[0]
        lut = np.arange(256) if span == 0 else np.clip(np.round((cdf - nonzero[0]) * 255.0 / span), 0, 255)
        out[..., c] = lut.astype(np.uint8)[img[..., c]]
    return out


RAND_AUGMENT_OPS = {
    "identity": lambda img, m, s: img,
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "rotate": _rotate,
    "solarize": lambda img, m, s: np.where(img >= 256 - int(256 * m / 30), 255 - img, img).astype(np.uint8),
    "posterize": lambda img, m, s: (img & np.uint8((0xFF << max(0, int(4 * m / 30))) & 0xFF)),
    "contrast": lambda img, m, s: _blend(img, np.float32(img.mean()), 1 + 0.9 * m / 30 * s),
    "brightness": lambda img, m, s: _blend(img, np.float32(0), 1 + 0.9 * m / 30 * s),
    "sharpness": lambda img, m, s: _blend(img, ndimage.uniform_filter(img.astype(np.float32), (3, 3, 1)), 1 + 0.9 * m / 30 * s),
    "shear_x": lambda img, m, s: _shear(img, m, s, 1),
    "shear_y": lambda img, m, s: _shear(img, m, s, 0),
    "translate_x": lambda img, m, s: _translate(img, m, s, 1),
    "translate_y": lambda img, m, s: _translate(img, m, s, 0),
}
_OP_NAMES = tuple(RAND_AUGMENT_OPS)


def rand_augment(images: np.ndarray, num_ops: int, magnitude: int, rng: np.random.Generator) -> np.ndarray:
    """Apply `num_ops` uniformly chosen ops at `magnitude` (random sign) to each uint8 image."""
    if num_ops == 0:
        return images
    out = images.copy()
    choices = rng.integers(0, len(_OP_NAMES), (len(images), num_ops))
    signs = np.where(rng.random((len(images), num_ops)) < 0.5, -1.0, 1.0)
    for i in range(len(images)):
        img = out[i]
        for op, sign in zip(choices[i], signs[i]):
            img = RAND_AUGMENT_OPS[_OP_NAMES[op]](img, magnitude, sign)
        out[i] = img
    return out
