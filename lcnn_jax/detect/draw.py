"""`lcnn detect WORKDIR IMAGE OUT.png`: run a trained detector (EMA weights) on one image and draw its boxes.

The image (PNG/JPEG, grayscale or RGB) is converted to the training data's channel count,
resized to the run's resolution and normalised as in evaluation; boxes are drawn on the original
image with class names and scores.
"""

from __future__ import annotations

import io
from pathlib import Path

import jax
import numpy as np

from lcnn_jax.atomic import write_bytes_atomic
from lcnn_jax.config import Config, from_json
from lcnn_jax.data.box_augment import resize_hw
from lcnn_jax.errors import ConfigError
from lcnn_jax.plots import pyplot


def read_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 HWC (C = 1 for grayscale, else 3; alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"image {str(path)!r} does not exist")
    try:
        with Image.open(path) as im:
            im = im.convert("L") if im.mode in ("1", "L", "I", "I;16", "F") else im.convert("RGB")
            x = np.asarray(im, np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise ConfigError(f"cannot read image {str(path)!r}: {e}") from None
    return x[..., None] if x.ndim == 2 else x


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """uint8 HWC with `channels` channels: RGB to luminance for 1, grayscale repeated for 3."""
    if image.shape[-1] == channels:
        return image
    if channels == 1:
        lum = image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return np.clip(np.round(lum), 0, 255).astype(np.uint8)[..., None]
    return np.repeat(image[..., :1], channels, axis=-1)


def run_config(workdir: str | Path) -> Config:
    """The config of a detection run directory (ConfigError for a missing or classification run)."""
    path = Path(workdir) / "config.json"
    if not path.exists():
        raise ConfigError(f"{str(workdir)!r} is not a run directory (no config.json)")
    config = from_json(path.read_text())
    if config.task != "detection":
        raise ConfigError(f"{str(workdir)!r} is a {config.task} run; lcnn detect needs a task=detection run")
    return config


def detect(workdir: str | Path, image_path: str | Path, score: float) -> dict:
    """The newest checkpoint's EMA detections on one image: boxes (k, 4) normalised xyxy, scores, classes, names."""
    from lcnn_jax.detect.nms import batched_nms
    from lcnn_jax.detect.train import class_names, detection_job, detection_setup, nms_config
    from lcnn_jax.train.loop import restore_newest

    if not 0 <= score <= 1:
        raise ConfigError(f"--score must be in [0, 1], got {score}")
    config = run_config(workdir)
    image = read_image(image_path)
    s = detection_setup(config)
    _, _, state, step = restore_newest(workdir, detection_job(config, s))
    det, size = s.detector, s.detector.spec.resolution
    x = to_channels(image, s.train_split.channels)
    x = np.clip(np.round(resize_hw(x, size, size)), 0, 255).astype(np.uint8)  # as evaluation resizes
    variables = {"params": state.ema_params, "batch_stats": state.batch_stats}
    nms = nms_config(config.detect, score)
    forward = jax.jit(lambda v, images: batched_nms(*det.decode(det.module.apply(v, images, train=False)), nms))
    dets = jax.device_get(forward(variables, s.prep(x[None])))
    keep = dets.valid[0]
    return dict(image=image, step=step, boxes=dets.boxes[0][keep], scores=dets.scores[0][keep],
                classes=dets.classes[0][keep], names=class_names(config, s.train_split.num_classes))


def draw(image: np.ndarray, boxes, scores, classes, names, out: str | Path) -> Path:
    """Draw labelled boxes (normalised xyxy) on `image` with matplotlib and write a PNG atomically."""
    plt = pyplot()
    h, w = image.shape[:2]
    fig, ax = plt.subplots(figsize=(6, 6 * h / w), dpi=100)
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
    colours = plt.get_cmap("tab10")
    for (x1, y1, x2, y2), sc, c in zip(boxes, scores, classes):
        colour = colours(int(c) % 10)
        ax.add_patch(plt.Rectangle((x1 * w, y1 * h), (x2 - x1) * w, (y2 - y1) * h, fill=False, edgecolor=colour,
                                   linewidth=1.5))
        label = names[int(c)] if 0 <= int(c) < len(names) else str(int(c))
        ax.text(x1 * w, y1 * h, f"{label} {sc:.2f}", color="white", fontsize=7, va="bottom",
                bbox=dict(facecolor=colour, alpha=0.8, pad=1, edgecolor="none"))
    ax.set_axis_off()
    fig.tight_layout(pad=0)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    out = Path(out)
    write_bytes_atomic(out, buf.getvalue())
    return out
