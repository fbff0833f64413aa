"""From a Config to the network a run trains: base spec (model.*) grown by scaling.*.

Shared by `train_and_evaluate`, `lcnn sweep run --dry-run` and the reports, so all three agree
on the architecture, its MACs and the realised multipliers.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from lcnn_jax.config import Config, DataConfig, ScalingConfig
from lcnn_jax.errors import ConfigError
from lcnn_jax.presets import get_spec
from lcnn_jax.spec import NetSpec


# task=detection keeps the classification default in data.dataset; it then means the synthetic scenes.
CLASSIFICATION_DEFAULT_DATASET = DataConfig().dataset


def dataset_name(config: Config) -> str:
    """The dataset a run reads: data.dataset, except that a detection run left at the classification
    default (fashion_mnist) reads the synthetic detection scenes built from Fashion-MNIST."""
    if config.task == "detection" and config.data.dataset == CLASSIFICATION_DEFAULT_DATASET:
        from lcnn_jax.data.detection_scenes import NAME

        return NAME
    return config.data.dataset


def num_classes(config: Config) -> int:
    """Class count of the run's dataset (detection: foreground classes)."""
    if config.task != "detection":
        return dataset_num_classes(config.data)
    from lcnn_jax.data.detection_scenes import CLASS_NAMES, NAME

    name = dataset_name(config)
    if name == NAME:
        return len(CLASS_NAMES)
    from lcnn_jax.data.sources import builder_for

    return int(builder_for(name, config.data.data_dir).info.features["objects"]["label"].num_classes)


def dataset_num_classes(data: DataConfig) -> int:
    """Class count of the configured dataset (well-known ones without touching disk)."""
    from lcnn_jax.data.catalog import KNOWN

    if data.dataset in KNOWN:
        return KNOWN[data.dataset][0]
    from lcnn_jax.data.sources import builder_for

    label = builder_for(data.dataset, data.data_dir).info.features["label"]
    return int(label.num_classes)


def base_spec(config: Config, num_classes: int):
    """The model.* network: a preset, the architecture of `model.init_from`, or (task=detection) a detector spec."""
    m = config.model
    from lcnn_jax.detect.registry import check_model_name, detector_spec

    check_model_name(m.name, config.task)
    if config.task == "detection":
        return detector_spec(m, num_classes)
    if m.init_from:
        from lcnn_jax.interop.pretrained import spec_from_record

        record = json.loads((Path(m.init_from) / "model.json").read_text())
        record.update(num_classes=num_classes)
        if m.resolution is not None:
            record["resolution"] = m.resolution
        spec = spec_from_record(record)
        spec = spec.replace(
            dropout=spec.dropout if m.dropout is None else m.dropout,
            stochastic_depth=spec.stochastic_depth if m.stochastic_depth is None else m.stochastic_depth,
        )
    else:
        spec = get_spec(
            m.name, width=m.width, depth=m.depth, resolution=m.resolution, num_classes=num_classes,
            dropout=m.dropout, stochastic_depth=m.stochastic_depth, padding=m.padding,
        )
    if m.bn_momentum is not None:
        spec = spec.replace(bn=dataclasses.replace(spec.bn, momentum=m.bn_momentum))
    return spec


def coefficients(s: ScalingConfig):
    """Compound coefficients; gamma=None is derived from alpha*beta^2*gamma^2 = constraint."""
    from lcnn_jax.scaling import Coefficients, derived_gamma

    gamma = derived_gamma(s.alpha, s.beta, s.constraint) if s.gamma is None else s.gamma
    if gamma < 1.0:
        raise ConfigError(
            f"scaling: alpha*beta^2 = {s.alpha * s.beta ** 2:.3f} exceeds the constraint {s.constraint:g}, "
            "so no gamma >= 1 satisfies alpha*beta^2*gamma^2 = constraint"
        )
    return Coefficients(alpha=s.alpha, beta=s.beta, gamma=gamma, share=s.share)


def resolve_model(config: Config, num_classes: int) -> tuple[NetSpec, dict]:
    """(spec, scaling record) of a run; the record is empty when scaling.strategy is none.

    The spec is a NetSpec, or a detector spec (lcnn_jax.detect.registry) when task=detection.
    """
    base = base_spec(config, num_classes)
    s = config.scaling
    if s.strategy == "none":
        return base, {}
    if config.model.init_from:
        raise ConfigError("model.init_from loads fixed shapes; it cannot be combined with scaling.strategy")
    from lcnn_jax.scaling import Scaled, apply, realised_macs, solve

    coeffs = coefficients(s)
    if s.strategy == "compound" and s.phi is not None:
        spec = apply(base, "compound", s.phi, coeffs)
        base_macs = realised_macs(base)
        ratio = realised_macs(spec) / base_macs
        scaled = Scaled(spec, "compound", ratio, s.phi, base_macs, realised_macs(spec), s.tolerance)
    else:
        scaled = solve(base, s.strategy, s.target, coeffs, s.tolerance)
    record = scaled.record()
    record.update(alpha=coeffs.alpha, beta=coeffs.beta, gamma=coeffs.gamma, share=coeffs.share, phi=s.phi)
    return scaled.spec, record
