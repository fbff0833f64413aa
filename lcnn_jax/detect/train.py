"""task=detection: the detection `Job` that `lcnn_jax.train.loop.run_job` trains and evaluates.

Everything around the step is the classification loop's (workdir layout, checkpoints and resume,
metrics.jsonl, wandb, summary.json, optimiser and schedule); this module supplies the parts that
differ:

* data: `data.dataset` left at the classification default ('fashion_mnist') means the synthetic
  scenes (`lcnn_detection_scenes`, built from Fashion-MNIST with the detect.scenes_* fields;
  item sizes scale with the canvas: 12-96 px on the default 128 px canvas); 'voc' / 'coco' read a
  prepared TFDS copy. Training batches are box-augmented per detect.crop_prob / jitter_*.
* the step: the detector's own loss (SSD multibox or YOLOv8 box/cls/DFL) through the shared
  `make_train_step`.
* evaluation: decode -> batched NMS (detect.iou_threshold, score_threshold, max_detections) ->
  COCO mAP@[.5:.95] ('map') and mAP@.5 ('map50') through pycocotools, for raw and EMA weights,
  plus the mean eval loss.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from lcnn_jax.config import CompressConfig, Config, DetectConfig
from lcnn_jax.data.box_augment import BoxAugment
from lcnn_jax.data.detection_pipeline import DetectionTrainBatches, detection_eval_batches, eval_ground_truth
from lcnn_jax.data.detection_scenes import CLASS_NAMES, NAME, DetectionSplit, SceneSpec, load_detection_split
from lcnn_jax.data.pipeline import Preprocess, normalisation
from lcnn_jax.detect.coco_eval import batch_detections, coco_map
from lcnn_jax.detect.nms import NmsConfig, batched_nms
from lcnn_jax.detect.registry import Detector, build_detector, in_channels
from lcnn_jax.errors import ConfigError
from lcnn_jax.net import init_variables
from lcnn_jax.resolve import dataset_name, num_classes, resolve_model
from lcnn_jax.scaling import counts as scaling_counts
from lcnn_jax.train import devices
from lcnn_jax.train.loop import Job, latency_ms, model_info
from lcnn_jax.train.state import TrainState
from lcnn_jax.train.steps import make_train_step

# Batch keys the train and eval steps read; image ids and sizes stay on the host for COCO eval.
DEVICE_KEYS = ("image", "boxes", "labels")


def scene_spec(cfg: DetectConfig) -> SceneSpec:
    """The synthetic scenes detect.scenes_* describe; item sides scale with the canvas (12-96 px at 128)."""
    base = SceneSpec()
    ratio = cfg.scenes_canvas / base.canvas
    return SceneSpec(canvas=cfg.scenes_canvas, train_scenes=cfg.scenes_train, test_scenes=cfg.scenes_test,
                     seed=cfg.scenes_seed, min_side=max(4, round(base.min_side * ratio)),
                     max_side=max(4, round(base.max_side * ratio)))


def class_names(config: Config, num_classes: int) -> tuple[str, ...]:
    """Display names of the detector's classes (the scenes' Fashion-MNIST names; indices otherwise)."""
    return CLASS_NAMES if dataset_name(config) == NAME else tuple(str(i) for i in range(num_classes))


@dataclasses.dataclass(frozen=True)
class DetectionSetup:
    """A detection run's data, detector and preprocessing. Building it checks input and writes nothing."""

    train_split: DetectionSplit
    eval_split: DetectionSplit
    detector: Detector
    scaling: dict  # resolve_model's record ({} without scaling)
    prep: Preprocess  # normalised by the training split's statistics


def detection_setup(config: Config) -> DetectionSetup:
    """Check the config, load the splits and resolve the (scaled) detector."""
    if config.compress != CompressConfig():
        raise ConfigError("compress.* (pruning, QAT, int8 PTQ) is not supported with task=detection yet; "
                          "leave the compress section at its defaults")
    # The model first: a bad name or size fails before any scenes are generated.
    model_spec, scaling = resolve_model(config, num_classes(config))
    d = config.data
    name, spec = dataset_name(config), scene_spec(config.detect)
    train = load_detection_split(name, d.train_split, d.data_dir, spec, d.max_train_examples)
    test = load_detection_split(name, d.eval_split, d.data_dir, spec)
    prep = Preprocess(model_spec.resolution, in_channels(model_spec), *normalisation(train))
    return DetectionSetup(train, test, build_detector(model_spec, config.model.impl), scaling, prep)


def make_detection_eval_step(detector: Detector, nms: NmsConfig):
    """eval_step(params, batch_stats, batch) -> the batch's loss and its NMS detections (boxes, scores, classes, valid)."""

    def eval_step(params, batch_stats, batch: dict) -> dict:
        outputs = detector.module.apply({"params": params, "batch_stats": batch_stats}, batch["image"], train=False)
        outputs = jax.tree.map(lambda x: x.astype(jnp.float32), outputs)
        loss, _ = detector.loss(outputs, batch["boxes"], batch["labels"])
        dets = batched_nms(*detector.decode(outputs), nms)
        return {"loss": loss, "boxes": dets.boxes, "scores": dets.scores, "classes": dets.classes, "valid": dets.valid}

    return eval_step


def nms_config(cfg: DetectConfig, score_threshold: float | None = None) -> NmsConfig:
    """NMS settings from detect.* (`score_threshold` overrides detect.score_threshold)."""
    score = cfg.score_threshold if score_threshold is None else score_threshold
    return NmsConfig(iou_threshold=cfg.iou_threshold, score_threshold=score, max_detections=cfg.max_detections)


def evaluate(eval_fn, state: TrainState, s: DetectionSetup, ground_truth: list, config: Config, sharding) -> dict:
    """COCO 'map'/'map50' and mean 'loss' of raw and EMA ('ema_'-prefixed) weights, reading the split once."""
    bs = config.data.eval_batch_size
    weights = {"": state.params, "ema_": state.ema_params}
    found = {tag: [] for tag in weights}
    losses = {tag: [] for tag in weights}
    for batch in detection_eval_batches(s.eval_split, config.data, s.prep, bs, config.detect.max_boxes):
        placed = devices.put_batch({k: batch[k] for k in DEVICE_KEYS}, sharding, bs)
        for tag, params in weights.items():
            out = jax.device_get(eval_fn(params, state.batch_stats, placed))
            found[tag] += batch_detections(out["boxes"], out["scores"], out["classes"], out["valid"],
                                           batch["image_id"], batch["size"])
            losses[tag].append(float(out["loss"]))
    result = {}
    for tag in weights:
        m = coco_map(ground_truth, found[tag], num_classes=s.train_split.num_classes)
        result.update({f"{tag}map": m["map"], f"{tag}map50": m["map50"], f"{tag}loss": float(np.mean(losses[tag]))})
    return result


def detection_job(config: Config, setup: DetectionSetup | None = None) -> Job:
    """The shared loop's job for task=detection (`setup` reuses an already built one)."""
    s = setup or detection_setup(config)
    d, det = config.data, s.detector
    spec = det.spec
    augment = BoxAugment(crop_prob=config.detect.crop_prob, flip=d.flip, jitter_low=config.detect.jitter_low,
                         jitter_high=config.detect.jitter_high)
    batches = DetectionTrainBatches(s.train_split, d, s.prep, d.batch_size, config.train.seed, augment,
                                    config.detect.max_boxes)  # checks the batch size
    mesh = devices.data_mesh()
    repl, data = devices.replicated(mesh), devices.batch_sharded(mesh)
    eval_fn = devices.jit_eval_step(make_detection_eval_step(det, nms_config(config.detect)), mesh)
    ground_truth = eval_ground_truth(s.eval_split)
    counts = scaling_counts(spec)  # memoised: resolve_model has counted this spec when it scaled it
    channels = in_channels(spec)

    def make_step(tx):
        return make_train_step(det.module, tx, ema_decay=config.optim.ema_decay, precision=config.train.precision,
                               loss_fn=lambda out, batch: det.loss(out, batch["boxes"], batch["labels"]))

    return Job(
        batches=batches, mesh=mesh, repl=repl, data=data,
        init_variables=lambda key: init_variables(det.module, spec.resolution, channels, key=key),
        make_train_step=make_step,
        evaluate=lambda state: evaluate(eval_fn, state, s, ground_truth, config, data),
        info=model_info(spec, counts, s.scaling, config),
        finish=lambda state, _: {"eval_latency_ms": latency_ms(det.module, state, spec.resolution, channels)},
    )
