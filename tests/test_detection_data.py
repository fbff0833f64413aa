"""Synthetic detection scenes (builder, loader), box-consistent augmentation, and the detection pipeline."""

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lcnn_jax.config import DataConfig
from lcnn_jax.data import box_augment as ba
from lcnn_jax.data.detection_pipeline import DetectionTrainBatches, detection_eval_batches, eval_ground_truth, pad_boxes
from lcnn_jax.data.detection_scenes import NAME, SceneSpec, from_tfds_objects, load_detection_split
from lcnn_jax.data.idx import write_idx
from lcnn_jax.data.pipeline import Preprocess
from lcnn_jax.errors import ConfigError

SPEC = SceneSpec(train_scenes=50, test_scenes=20, max_side=64)


@pytest.fixture(scope="module")
def sparse_items(tmp_path_factory):
    """LCNN_DATA_DIR whose IDX items are a bright rectangle inside black 28x28: tight boxes are checkable."""
    root = tmp_path_factory.mktemp("det_items")
    out = root / "fashion-mnist"
    out.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 300), ("t10k", 100)):
        images = np.zeros((n, 28, 28), np.uint8)
        for im in images:
            y0, x0 = rng.integers(2, 12, 2)
            y1, x1 = rng.integers(16, 26, 2)
            im[y0:y1, x0:x1] = rng.integers(120, 256)
        write_idx(out / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n).astype(np.uint8))
    return root


@pytest.fixture
def scenes_env(sparse_items, tmp_path, monkeypatch):
    monkeypatch.setenv("LCNN_DATA_DIR", str(sparse_items))
    return tmp_path


def _records(data_dir: Path) -> dict[str, bytes]:
    files = sorted(data_dir.rglob("*.array_record*"))
    assert files
    return {f.name: f.read_bytes() for f in files}


def test_scenes_are_deterministic_per_seed(scenes_env):
    a = load_detection_split(NAME, "train", str(scenes_env / "a"), SPEC)
    # Another process: proto map order there differs unless serialisation is made deterministic.
    code = ("from lcnn_jax.data.detection_scenes import *; "
            f"load_detection_split(NAME, 'train', {str(scenes_env / 'b')!r}, {SPEC!r})")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    b = load_detection_split(NAME, "train", str(scenes_env / "b"), SPEC)
    assert _records(scenes_env / "a") == _records(scenes_env / "b")  # byte-identical builds
    np.testing.assert_array_equal(a.images, b.images)
    other = load_detection_split(NAME, "train", str(scenes_env / "a"), SceneSpec(**{**SPEC.__dict__, "seed": 1}))
    assert not np.array_equal(a.images, other.images)  # a separate prepared copy, other scenes
    assert (a.num_examples, a.num_classes, a.channels, a.images.shape) == (50, 10, 1, (50, 128, 128, 1))
    assert load_detection_split(NAME, "test", str(scenes_env / "a"), SPEC).num_examples == 20


def test_boxes_are_tight_to_the_pasted_pixels(scenes_env):
    split = load_detection_split(NAME, "train", str(scenes_env), SPEC)
    counts = [len(l) for l in split.labels]
    assert min(counts) >= 1 and max(counts) <= 6 and len(set(counts)) > 2
    for image, boxes, labels in split.examples(range(split.num_examples)):
        ink = image[..., 0] > 0
        assert boxes.dtype == np.float32 and labels.dtype == np.int64 and ((0 <= labels) & (labels < 10)).all()
        assert ((boxes >= 0) & (boxes <= 1)).all() and (boxes[:, 2:] > boxes[:, :2]).all()
        px = np.round(boxes * 128).astype(int)
        np.testing.assert_allclose(px / 128, boxes)  # boxes sit on pixel edges
        covered = np.zeros_like(ink)
        for x0, y0, x1, y1 in px:
            covered[y0:y1, x0:x1] = True
            # Tight: every edge row and column of the box holds ink.
            assert ink[y0, x0:x1].any() and ink[y1 - 1, x0:x1].any()
            assert ink[y0:y1, x0].any() and ink[y0:y1, x1 - 1].any()
            # The sparse items are 6-24 of 28 px wide: a box is far smaller than the pasted square.
            assert ink[y0:y1, x0:x1].mean() > 0.3
        assert not (ink & ~covered).any()  # no ink outside the boxes
        iou = _pairwise_iou(boxes)
        assert (iou[~np.eye(len(boxes), dtype=bool)] < SPEC.max_iou).all()


def _pairwise_iou(b):
    lo, hi = np.maximum(b[:, None, :2], b[None, :, :2]), np.minimum(b[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), -1)
    areas = np.prod(b[:, 2:] - b[:, :2], -1)
    return inter / (areas[:, None] + areas[None] - inter)


def test_unknown_or_unprepared_detection_datasets(scenes_env):
    with pytest.raises(ConfigError, match="unknown detection dataset 'kitti'.*lcnn_detection_scenes.*voc.*coco"):
        load_detection_split("kitti", "train", str(scenes_env))
    with pytest.raises(ConfigError, match="not prepared"):
        load_detection_split("voc", "train", str(scenes_env))
    with pytest.raises(ConfigError, match="no split 'validation'"):
        load_detection_split(NAME, "validation", str(scenes_env), SPEC)
    with pytest.raises(ConfigError, match="max_side"):
        SceneSpec(max_side=200)


def test_tfds_objects_are_mapped_to_xyxy():
    record = {
        "image": np.zeros((10, 20, 3), np.uint8),
        "objects": {"bbox": np.array([[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1]], np.float32),  # ymin, xmin, ymax, xmax
                    "label": np.array([4, 7]), "is_crowd": np.array([False, True])},
    }
    out = from_tfds_objects(record)
    np.testing.assert_allclose(out["boxes"], [[0.2, 0.1, 0.6, 0.5]])
    np.testing.assert_array_equal(out["labels"], [4])
    del record["objects"]["is_crowd"]  # VOC has none
    assert len(from_tfds_objects(record)["labels"]) == 2


# --- augmentation ------------------------------------------------------------------------------

def _rect_image(rects, size=100):
    """A black image with rectangles (x0, y0, x1, y1, value) and their normalised boxes."""
    image = np.zeros((size, size, 1), np.uint8)
    for x0, y0, x1, y1, v in rects:
        image[y0:y1, x0:x1] = v
    boxes = np.array([r[:4] for r in rects], np.float32) / size
    return image, boxes, np.array([r[4] for r in rects])


def test_flip_and_crop_move_boxes_with_the_pixels_exactly():
    image, boxes, labels = _rect_image([(10, 20, 30, 60, 200)])
    flipped, fb = ba.hflip(image, boxes)
    ys, xs = np.nonzero(flipped[..., 0])
    np.testing.assert_allclose(fb[0] * 100, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    out, cb, cl = ba.window(image, boxes, labels, 15, 30, 75, 90)  # cuts the rectangle's left and top
    assert out.shape == (60, 60, 1)
    ys, xs = np.nonzero(out[..., 0])
    np.testing.assert_allclose(cb[0] * 60, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1e-4)
    # Centre outside the window, or thinner than a pixel once clipped: dropped with its label.
    image, boxes, labels = _rect_image([(10, 20, 30, 60, 200), (60, 60, 90, 90, 150), (50, 50, 50, 80, 100)])
    boxes[2, 2] = 0.504  # 0.4 px wide
    _, cb, cl = ba.window(image, boxes, labels, 40, 40, 100, 100)
    np.testing.assert_array_equal(cl, [150])
    image, boxes, labels = _rect_image([(10, 20, 30, 60, 200)])
    padded, pb, _ = ba.window(image, boxes, labels, -20, -10, 80, 90)  # beyond the image: zero padding
    ys, xs = np.nonzero(padded[..., 0])
    assert padded.shape == (100, 100, 1)
    np.testing.assert_allclose(pb[0] * 100, [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], atol=1e-4)


def test_random_augmentation_keeps_boxes_on_their_objects():
    # Label l is drawn with intensity 60 + 19 l: each surviving box must still sit on its own rectangle.
    rng = np.random.default_rng(0)
    aug = ba.BoxAugment(crop_prob=0.7, jitter_low=0.6, jitter_high=1.4)
    kept = 0
    for _ in range(60):
        rects = []
        for k, l in enumerate(rng.choice(10, 3, replace=False)):
            x0, y0 = 5 + 32 * k, int(rng.integers(5, 50))
            rects.append((x0, y0, x0 + int(rng.integers(10, 28)), y0 + int(rng.integers(10, 45)), 60 + 19 * l))
        image, boxes, _ = _rect_image(rects)
        labels = (np.array([r[4] for r in rects]) - 60) // 19
        out, ob, ol = aug(image, boxes, labels, 64, rng)
        assert out.shape == (64, 64, 1) and out.dtype == np.uint8 and ob.dtype == np.float32
        assert ((ob >= 0) & (ob <= 1)).all() and ((ob[:, 2:] - ob[:, :2]) * 64 >= 1).all()
        for (x0, y0, x1, y1), l in zip(np.round(ob * 64).astype(int), ol):
            inner = out[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1, 0]  # 1 px in: resizing blurs the edges
            if inner.size:
                assert abs(float(np.median(inner)) - (60 + 19 * l)) < 6
            kept += 1
    assert kept > 60
    a = aug(image, boxes, labels, 64, np.random.default_rng(5))
    b = aug(image, boxes, labels, 64, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


# --- pipeline ----------------------------------------------------------------------------------

def _prep(resolution=64):
    return Preprocess(resolution, 3, (0.1,), (0.3,))


def test_train_batches_shapes_padding_and_resume(scenes_env):
    split = load_detection_split(NAME, "train", str(scenes_env), SPEC)
    batches = DetectionTrainBatches(split, DataConfig(), _prep(), batch_size=8, seed=3)
    assert batches.steps_per_epoch == 6
    run = list(itertools.islice(batches.from_step(0), 14))
    again = list(itertools.islice(batches.from_step(0), 14))
    resumed = list(itertools.islice(batches.from_step(9), 5))
    for a, b in zip(run, again):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["boxes"], b["boxes"])
    for a, b in zip(run[9:], resumed):
        for key in ("image", "boxes", "labels"):
            np.testing.assert_array_equal(a[key], b[key])
    first = run[0]
    assert first["image"].shape == (8, 64, 64, 3) and first["image"].dtype == np.float32
    assert first["boxes"].shape == (8, 16, 4) and first["boxes"].dtype == np.float32
    assert first["labels"].shape == (8, 16) and first["labels"].dtype == np.int32
    for b in run:
        real = b["labels"] >= 0
        assert real.any(axis=1).sum() >= 6 and (real.sum(axis=1) <= 6).all()
        # Real rows first, then padding; padding boxes are zero.
        assert (np.diff(real.astype(int), axis=1) <= 0).all() and (b["boxes"][~real] == 0).all()
        assert ((b["boxes"][real] >= 0) & (b["boxes"][real] <= 1)).all()
    other = DetectionTrainBatches(split, DataConfig(), _prep(), batch_size=8, seed=4)
    assert not np.array_equal(next(other.from_step(0))["image"], first["image"])


def test_eval_batches_cover_the_split_unaugmented(scenes_env):
    split = load_detection_split(NAME, "test", str(scenes_env), SPEC)
    batches = list(detection_eval_batches(split, DataConfig(), _prep(128), batch_size=8, max_boxes=4))
    assert len(batches) == 3
    ids = np.concatenate([b["image_id"] for b in batches])
    np.testing.assert_array_equal(ids[:20], np.arange(20))
    assert (ids[20:] == -1).all() and np.concatenate([b["mask"] for b in batches]).sum() == 20
    assert (batches[0]["size"] == 128).all() and (batches[-1]["size"][4:] == 0).all()
    np.testing.assert_allclose(batches[0]["image"][..., 0], (split.images[:8, ..., 0] / 255 - 0.1) / 0.3, atol=1e-5)
    for i in range(8):
        n = min(4, len(split.labels[i]))  # max_boxes=4 cuts the rest
        np.testing.assert_array_equal(batches[0]["boxes"][i, :n], split.boxes[i][:n])
        np.testing.assert_array_equal(batches[0]["labels"][i, :n], split.labels[i][:n])
    gt = eval_ground_truth(split)
    assert len(gt) == 20 and gt[3][0] == 3
    np.testing.assert_allclose(gt[3][1][:, 2:], (split.boxes[3][:, 2:] - split.boxes[3][:, :2]) * 128, rtol=1e-5)


def test_pad_boxes_cuts_and_pads():
    boxes, labels = pad_boxes([np.ones((20, 4)), np.zeros((0, 4))], [np.arange(20), np.zeros(0)], 16)
    assert boxes.shape == (2, 16, 4) and (labels[0] == np.arange(16)).all() and (labels[1] == -1).all()
