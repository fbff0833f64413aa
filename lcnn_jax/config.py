"""Run configuration: nested frozen dataclasses, a YAML file, and dotted `key=value` overrides.

The overrides use exactly the form a W&B agent passes with `${args_no_hyphens}`
(`model.width=0.5 optim.lr=0.1`). Every key is validated against the dataclass fields (unknown
keys suggest the nearest valid ones), values are parsed by the field's type, and ranges and
choices come from each field's metadata. Nothing here is global: a `Config` is passed down.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from pathlib import Path
from typing import Any

from lcnn_jax.errors import ConfigError, unknown_choice
from lcnn_jax.spec import IMPLS


def _f(default, *, choices=None, low=None, high=None, low_open=False, high_open=False, help=""):
    """A dataclass field with validation metadata (inclusive bounds unless *_open)."""
    meta = dict(choices=choices, low=low, high=high, low_open=low_open, high_open=high_open, help=help)
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which network: a preset plus its multipliers (None = the preset's default)."""

    name: str = _f("mobilenet_v2", help="preset name (lcnn models)")
    width: float | None = _f(None, low=0, low_open=True)
    depth: float | None = _f(None, low=0, low_open=True)
    resolution: int | None = _f(None, low=1, help="input side; None = the preset's default")
    dropout: float | None = _f(None, low=0, high=1, high_open=True)
    stochastic_depth: float | None = _f(None, low=0, high=1, high_open=True)
    padding: str | None = _f(None, choices=("same", "symmetric"))
    impl: str = _f("auto", choices=IMPLS, help="depthwise/pointwise formulation")
    bn_momentum: float | None = _f(None, low=0, high=1, high_open=True, help="BN running-average decay; None = preset's")
    init_from: str | None = _f(None, help="directory written by `lcnn convert` to fine-tune from")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Dataset and input pipeline."""

    dataset: str = _f("fashion_mnist", help="fashion_mnist (offline default) or any prepared TFDS name")
    data_dir: str | None = _f(None, help="TFDS data_dir (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")
    train_split: str = _f("train")
    eval_split: str = _f("test")
    batch_size: int = _f(256, low=1)
    eval_batch_size: int = _f(500, low=1)
    crop_padding: int = _f(2, low=0, help="random crop after zero padding by this many pixels; 0 = off")
    flip: bool = _f(True, help="random horizontal flips")
    randaugment_ops: int = _f(0, low=0, high=4, help="RandAugment ops per image; 0 = off")
    randaugment_magnitude: int = _f(9, low=0, high=30)
    workers: int = _f(0, low=0, help="grain worker processes; 0 = threads in this process")
    prefetch: int = _f(4, low=0, help="batches prepared ahead")
    max_train_examples: int = _f(0, low=0, help="use only the first N training examples; 0 = all")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimiser, schedule and regularisation."""

    name: str = _f("sgd", choices=("sgd", "rmsprop", "adamw"))
    lr: float = _f(0.1, low=0, low_open=True, help="peak learning rate")
    momentum: float = _f(0.9, low=0, high=1, high_open=True)
    nesterov: bool = _f(True)
    rmsprop_decay: float = _f(0.9, low=0, high=1, high_open=True)
    rmsprop_eps: float = _f(1e-3, low=0, low_open=True)
    weight_decay: float = _f(5e-5, low=0, help="on conv/dense kernels only, never BN or biases")
    schedule: str = _f("cosine", choices=("cosine", "exponential", "constant"))
    warmup_epochs: float = _f(1.0, low=0)
    decay_rate: float = _f(0.97, low=0, high=1, low_open=True, help="exponential schedule: factor per decay_epochs")
    decay_epochs: float = _f(2.4, low=0, low_open=True)
    label_smoothing: float = _f(0.1, low=0, high=1, high_open=True)
    ema_decay: float = _f(0.999, low=0, high=1, high_open=True, help="EMA of params; 0 = off")
    grad_clip: float = _f(0.0, low=0, help="global-norm clipping; 0 = off")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Length, precision, devices, logging and checkpoints."""

    epochs: float = _f(10.0, low=0, low_open=True)
    seed: int = _f(0)
    precision: str = _f("float32", choices=("float32", "bfloat16"), help="compute dtype; params stay float32")
    log_every_steps: int = _f(50, low=1)
    eval_every_epochs: float = _f(1.0, low=0, low_open=True)
    checkpoint_every_steps: int = _f(500, low=1)
    keep_checkpoints: int = _f(2, low=1)
    progress: bool = _f(True, help="tqdm progress bar on stderr")


# Scaling strategies, in table and legend order (lcnn_jax.scaling implements them).
STRATEGIES = ("depth", "width", "resolution", "compound", "fast_compound")


@dataclasses.dataclass(frozen=True)
class ScalingConfig:
    """Grow the model.* network (the base) by a strategy to a MACs multiple, solved at run start."""

    strategy: str = _f("none", choices=("none",) + STRATEGIES)
    target: float = _f(1.0, low=0, low_open=True, help="MACs multiple of the base; the knob is solved for it")
    phi: float | None = _f(None, help="compound only: scale by this phi instead of solving for target")
    alpha: float = _f(1.2, low=1, help="compound depth coefficient")
    beta: float = _f(1.1, low=1, help="compound width coefficient")
    gamma: float | None = _f(1.15, low=1, help="compound resolution coefficient; None = derived from the constraint")
    constraint: float = _f(2.0, low=1, low_open=True, help="alpha * beta^2 * gamma^2 target for a derived gamma")
    share: float = _f(0.8, low=0, high=1, help="fast_compound: the share of the exponent given to width")
    tolerance: float = _f(0.05, low=0, low_open=True, help="realised MACs must land within this of the target")


@dataclasses.dataclass(frozen=True)
class CompressConfig:
    """Make the model cheaper while training: gradual magnitude pruning and quantization (lcnn_jax.compress)."""

    sparsity: float = _f(0.0, low=0, high=1, high_open=True, help="target fraction of zero prunable kernel weights")
    distribution: str = _f("uniform", choices=("uniform", "erk"), help="per-layer sparsity: same everywhere, or ERK")
    structured: bool = _f(False, help="prune whole output channels instead of single weights")
    prune_start: float = _f(0.1, low=0, high=1, help="fraction of training where the sparsity ramp starts")
    prune_end: float = _f(0.75, low=0, high=1, help="fraction of training where the target sparsity is reached")
    prune_every: int = _f(0, low=0, help="steps between mask updates in the ramp; 0 = 20 updates over the ramp")
    bits: int = _f(32, choices=(32, 8, 4), help="quantization-aware training of kernels at this precision; 32 = float")
    act_bits: int | None = _f(None, choices=(32, 8, 4), help="QAT bits of conv/dense inputs; None = 8 when bits < 32")
    ptq_int8: bool = _f(False, help="after training, quantize the EMA weights to int8 (qwix) and evaluate them")
    calibration_batches: int = _f(4, low=1, help="training batches that calibrate int8 activation scales")
    calibration_percentile: float = _f(99.99, low=0, high=100, low_open=True,
                                       help="int8 activation range: this percentile of |input|; 100 = max")


@dataclasses.dataclass(frozen=True)
class DetectConfig:
    """Detection runs (task=detection): targets, augmentation, post-processing and the synthetic scenes."""

    max_boxes: int = _f(16, low=1, help="ground-truth boxes per training image (padded / cut to this)")
    crop_prob: float = _f(0.5, low=0, high=1, help="probability of a random box-preserving crop")
    jitter_low: float = _f(0.75, low=0, low_open=True, help="scale jitter: smallest resize factor")
    jitter_high: float = _f(1.25, low=0, low_open=True, help="scale jitter: largest resize factor")
    iou_threshold: float = _f(0.45, low=0, high=1, low_open=True, help="NMS IoU threshold")
    score_threshold: float = _f(0.01, low=0, high=1, help="detections scoring below this are dropped")
    max_detections: int = _f(100, low=1, help="detections kept per image after NMS")
    scenes_train: int = _f(6000, low=1, help="lcnn_detection_scenes: training scenes generated")
    scenes_test: int = _f(1000, low=1, help="lcnn_detection_scenes: test scenes generated")
    scenes_canvas: int = _f(128, low=32, help="lcnn_detection_scenes: canvas side in pixels")
    scenes_seed: int = _f(0, help="lcnn_detection_scenes: generator seed (same seed, same bytes)")


@dataclasses.dataclass(frozen=True)
class WandbConfig:
    """Weights & Biases mirror of metrics.jsonl (offline unless WANDB_MODE/mode says otherwise)."""

    enabled: bool = _f(True)
    mode: str = _f("offline", choices=("offline", "online", "disabled"))
    project: str = _f("lcnn_jax")
    entity: str | None = _f(None)
    name: str | None = _f(None, help="run name; default: the workdir's name")
    group: str | None = _f(None, help="run group (a sweep sets its name)")
    job_type: str | None = _f(None, help="job type (a sweep sets the scaling strategy)")


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a run needs; `config.json` in the workdir reproduces the run on its own."""

    task: str = _f("classification", choices=("classification", "detection"), help="what the model learns")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    scaling: ScalingConfig = ScalingConfig()
    compress: CompressConfig = CompressConfig()
    detect: DetectConfig = DetectConfig()
    wandb: WandbConfig = WandbConfig()


def flat_keys(cls=Config, prefix: str = "") -> dict[str, tuple[type, dataclasses.Field]]:
    """Every dotted leaf key of a config class with its type and field."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out.update(flat_keys(t, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = (t, f)
    return out


def _unknown_key(key: str, valid) -> ConfigError:
    section = key.split(".")[0]
    same_section = [k for k in valid if k.startswith(section + ".")]
    return unknown_choice("config key", key, same_section or list(valid))


def _type_name(t) -> str:
    args = [a for a in typing.get_args(t) if a is not type(None)]
    base = args[0] if args else t
    name = getattr(base, "__name__", str(base))
    return f"{name} or none" if type(None) in typing.get_args(t) else name


def parse_value(key: str, t, value: Any):
    """Convert `value` (a YAML scalar or an override string) to field type `t`, naming `key` on failure."""
    optional = type(None) in typing.get_args(t)
    base = next((a for a in typing.get_args(t) if a is not type(None)), t)
    if isinstance(value, str) and value.strip().lower() in ("none", "null", "~") and optional:
        return None
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key}: expected {_type_name(t)}, got none")
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if base is int:
            if isinstance(value, bool):
                raise ValueError
            number = float(value) if isinstance(value, str) else value
            if not float(number).is_integer():
                raise ValueError
            return int(number)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
            return number
        if base is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {_type_name(t)}, got {value!r}") from None
    raise ConfigError(f"{key}: unsupported field type {t}")


def check_range(key: str, value, meta: dict) -> None:
    """Raise ConfigError when `value` violates the field metadata's choices or bounds."""
    if value is None:
        return
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, meta['choices']))}")
    low, high = meta.get("low"), meta.get("high")
    too_low = low is not None and (value <= low if meta.get("low_open") else value < low)
    too_high = high is not None and (value >= high if meta.get("high_open") else value > high)
    if too_low or too_high:
        lo = "" if low is None else f"{'(' if meta.get('low_open') else '['}{low}"
        hi = "inf)" if high is None else f"{high}{')' if meta.get('high_open') else ']'}"
        raise ConfigError(f"{key}: {value!r} is out of range {lo or '(-inf'}, {hi}")


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1} (keys prefixed with `prefix`)."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _build(cls, values: dict[str, Any], prefix: str = ""):
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            kwargs[f.name] = _build(t, values, f"{prefix}{f.name}.")
        elif f"{prefix}{f.name}" in values:
            kwargs[f.name] = values[f"{prefix}{f.name}"]
    return cls(**kwargs)


def make_config(values: dict[str, Any] | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A validated Config from nested/dotted `values` (e.g. a YAML file) and `key=value` overrides."""
    keys = flat_keys()
    merged: dict[str, Any] = {}
    for key, value in flatten(values or {}).items():
        merged[key] = value
    for item in overrides:
        item = item[2:] if item.startswith("--") else item  # `--key=value` works too
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value (e.g. model.width=0.5)")
        key, value = item.split("=", 1)
        merged[key.strip()] = value
    parsed = {}
    for key, value in merged.items():
        if key not in keys:
            raise _unknown_key(key, keys)
        t, f = keys[key]
        parsed[key] = parse_value(key, t, value)
        check_range(key, parsed[key], f.metadata)
    return canonical(_build(Config, parsed))


def canonical(config: Config) -> Config:
    """One form per distinct run: target 1 (without phi) is the unscaled base, i.e. strategy none."""
    s = config.scaling
    if s.strategy == "none" or (s.target == 1.0 and s.phi is None):
        return dataclasses.replace(config, scaling=dataclasses.replace(s, strategy="none", target=1.0, phi=None))
    return config


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML (or JSON) config file, if given, and apply `key=value` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        import yaml

        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {str(e).splitlines()[0]}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping of keys, got {type(values).__name__}")
    return make_config(values, overrides)


def to_dict(config: Config) -> dict[str, Any]:
    """The nested plain-dict form written to config.json."""
    return dataclasses.asdict(config)


def run_id(config: Config) -> str:
    """A short stable hash of the resolved config: the same config always maps to the same run."""
    import hashlib

    blob = json.dumps(to_dict(config), sort_keys=True).encode()
    return f"{config.model.name}-{hashlib.sha1(blob).hexdigest()[:10]}"


def from_json(text: str) -> Config:
    """Parse a config.json written by a run."""
    return make_config(json.loads(text))
