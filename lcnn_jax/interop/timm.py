"""Convert timm (PyTorch) state_dicts into lcnn Flax variables for the matching preset.

The key map is derived from the lcnn spec (`resolve_blocks`), never from the checkpoint, so every
tensor is checked against the architecture: a missing key, an extra key or a wrong shape is a
`ConfigError` that names the tensor. PyTorch OIHW kernels become HWIO, Linear (out, in) becomes
(in, out), and BN momentum/epsilon are converted to Flax's convention (momentum = 1 - torch's).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import numpy as np

from lcnn_jax.errors import ConfigError, unknown_choice
from lcnn_jax.presets import get_spec
from lcnn_jax.spec import BatchNormSpec, NetSpec, resolve_blocks


@dataclasses.dataclass(frozen=True)
class TimmModel:
    """How one timm model name maps onto an lcnn preset."""

    preset: str
    width: float | None = None
    padding: str = "symmetric"
    torch_bn_momentum: float = 0.1  # timm's BatchNorm2d default for every family listed here
    bn_eps: float = 1e-5  # timm: 1e-5; the tf_ ports of TensorFlow weights use TF's 1e-3

    def bn(self) -> BatchNormSpec:
        """BN constants in Flax convention: running average decay = 1 - torch momentum."""
        return BatchNormSpec(momentum=1.0 - self.torch_bn_momentum, epsilon=self.bn_eps)


TIMM_MODELS: dict[str, TimmModel] = {
    **{f"tf_efficientnet_b{i}": TimmModel(f"efficientnet_b{i}", padding="same", bn_eps=1e-3) for i in range(8)},
    "efficientnet_b0": TimmModel("efficientnet_b0"),
    "mobilenetv2_100": TimmModel("mobilenet_v2", width=1.0),
    "mobilenetv2_140": TimmModel("mobilenet_v2", width=1.4),
    "mobilenetv2_050": TimmModel("mobilenet_v2", width=0.5),
    "mobilenetv3_large_100": TimmModel("mobilenet_v3_large", width=1.0),
    "mobilenetv3_small_100": TimmModel("mobilenet_v3_small", width=1.0),
    "mobilenetv1_100": TimmModel("mobilenet_v1", width=1.0),
}

# The presets benchmarked against timm (benchmarks/), each with its identical timm architecture.
TIMM_COUNTERPARTS = {"mobilenet_v2": "mobilenetv2_100", "mobilenet_v3_large": "mobilenetv3_large_100",
                     "efficientnet_b0": "efficientnet_b0"}

# A torch key maps to (collection, flax path, layout): 'conv' OIHW->HWIO, 'dense' (out,in)->(in,out).
KeyMap = dict[str, tuple[str, tuple[str, ...], str]]
_IGNORED_SUFFIXES = (".num_batches_tracked",)


def _timm_model(timm_name: str) -> TimmModel:
    """The mapping of a supported timm model name; an unknown name is a ConfigError."""
    if timm_name not in TIMM_MODELS:
        raise unknown_choice("timm model", timm_name, sorted(TIMM_MODELS))
    return TIMM_MODELS[timm_name]


def timm_spec(timm_name: str, num_classes: int = 1000) -> NetSpec:
    """The lcnn spec equivalent to timm model `timm_name`."""
    t = _timm_model(timm_name)
    spec = get_spec(t.preset, width=t.width, num_classes=num_classes, padding=t.padding)
    return spec.replace(bn=t.bn())


def key_map(spec: NetSpec) -> KeyMap:
    """Every timm state_dict key of the network `spec` describes, with where it goes in lcnn."""
    keys: KeyMap = {}

    def conv(torch_name: str, path: tuple[str, ...], bias: bool = False) -> None:
        keys[f"{torch_name}.weight"] = ("params", path + ("kernel",), "conv")
        if bias:
            keys[f"{torch_name}.bias"] = ("params", path + ("bias",), "copy")

    def bn(torch_name: str, path: tuple[str, ...]) -> None:
        keys[f"{torch_name}.weight"] = ("params", path + ("scale",), "copy")
        keys[f"{torch_name}.bias"] = ("params", path + ("bias",), "copy")
        keys[f"{torch_name}.running_mean"] = ("batch_stats", path + ("mean",), "copy")
        keys[f"{torch_name}.running_var"] = ("batch_stats", path + ("var",), "copy")

    def conv_bn(torch_conv: str, torch_bn: str, path: tuple[str, ...]) -> None:
        conv(torch_conv, path + ("conv",))
        bn(torch_bn, path + ("bn",))

    conv_bn("conv_stem", "bn1", ("stem",))
    for b in resolve_blocks(spec):
        t, o = f"blocks.{b.stage}.{b.index}", (f"stage{b.stage}_block{b.index}",)
        if b.type == "separable":
            conv_bn(f"{t}.conv_dw", f"{t}.bn1", o + ("dw",))
            conv_bn(f"{t}.conv_pw", f"{t}.bn2", o + ("pw",))
        elif b.type == "conv":
            conv_bn(f"{t}.conv", f"{t}.bn1", o + ("conv",))
        else:
            # timm: InvertedResidual (conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3) when there
            # is an expansion conv, else DepthwiseSeparableConv (conv_dw, bn1, se, conv_pw, bn2).
            expands = b.expanded_channels != b.in_channels
            if expands:
                conv_bn(f"{t}.conv_pw", f"{t}.bn1", o + ("expand",))
            conv_bn(f"{t}.conv_dw", f"{t}.bn2" if expands else f"{t}.bn1", o + ("dw",))
            if b.se is not None:
                conv(f"{t}.se.conv_reduce", o + ("se", "reduce"), bias=True)
                conv(f"{t}.se.conv_expand", o + ("se", "expand"), bias=True)
            conv_bn(f"{t}.conv_pwl" if expands else f"{t}.conv_pw", f"{t}.bn3" if expands else f"{t}.bn2", o + ("project",))
    if spec.head.conv is not None:
        if spec.head.pre_logits is not None:
            # MobileNetV3: the pre-pool 1x1 conv is timm's last block (a ConvBnAct stage).
            conv_bn(f"blocks.{len(spec.stages)}.0.conv", f"blocks.{len(spec.stages)}.0.bn1", ("head_conv",))
        else:
            conv_bn("conv_head", "bn2", ("head_conv",))
    if spec.head.pre_logits is not None:
        conv("conv_head", ("pre_logits",), bias=True)
    keys["classifier.weight"] = ("params", ("classifier", "kernel"), "dense")
    keys["classifier.bias"] = ("params", ("classifier", "bias"), "copy")
    return keys


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; imported lazily so numpy checkpoints need no torch
        value = value.detach().cpu().float().numpy()
    return np.asarray(value, dtype=np.float32)


def _from_torch_layout(array: np.ndarray, layout: str) -> np.ndarray:
    if layout == "conv":
        return np.ascontiguousarray(array.transpose(2, 3, 1, 0))
    if layout == "dense":
        return np.ascontiguousarray(array.T)
    return array


def _torch_shape(flax_shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    if layout == "conv":
        kh, kw, i, o = flax_shape
        return (o, i, kh, kw)
    if layout == "dense":
        return tuple(reversed(flax_shape))
    return tuple(flax_shape)


def _listing(names: list[str], limit: int = 5) -> str:
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def convert(spec: NetSpec, state_dict: Mapping[str, Any]) -> dict:
    """Flax {'params', 'batch_stats'} for `spec` from a timm state_dict; checks every tensor."""
    from lcnn_jax.net import abstract_variables

    keys = key_map(spec)
    given = {k for k in state_dict if not k.endswith(_IGNORED_SUFFIXES)}
    missing = sorted(set(keys) - given)
    extra = sorted(given - set(keys))
    if missing:
        raise ConfigError(f"checkpoint lacks {len(missing)} tensor(s) {spec.name} needs: {_listing(missing)}")
    if extra:
        raise ConfigError(f"checkpoint has {len(extra)} tensor(s) {spec.name} does not use: {_listing(extra)}")
    abstract = abstract_variables(spec)
    variables: dict = {"params": {}, "batch_stats": {}}
    for torch_key, (collection, path, layout) in keys.items():
        node = abstract[collection]
        for part in path:
            node = node[part]
        want = _torch_shape(tuple(node.shape), layout)
        value = _to_numpy(state_dict[torch_key])
        if value.shape != want:
            raise ConfigError(
                f"tensor {torch_key!r} has shape {tuple(value.shape)}, {spec.name} needs {want} "
                f"(for {collection}/{'/'.join(path)})"
            )
        target = variables[collection]
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = _from_torch_layout(value, layout)
    n_expected = len(jax.tree_util.tree_leaves(abstract))
    if len(jax.tree_util.tree_leaves(variables)) != n_expected:  # guards the key map itself
        raise AssertionError(f"key map covers {len(jax.tree_util.tree_leaves(variables))} of {n_expected} variables")
    return variables


def from_timm(timm_name: str, state_dict: Mapping[str, Any], impl: str = "auto"):
    """(model, variables) computing the same function as timm's `timm_name` with `state_dict`.

    `model.apply(variables, images, train=False)` takes NHWC float32 images. The class count is
    read from the classifier, so fine-tuned checkpoints with other heads convert too.
    """
    from lcnn_jax.net import Net

    if "classifier.weight" not in state_dict:
        raise ConfigError("checkpoint has no 'classifier.weight': is this a timm classification state_dict?")
    num_classes = int(_to_numpy(state_dict["classifier.weight"]).shape[0])
    spec = timm_spec(timm_name, num_classes=num_classes)
    return Net(spec, impl=impl), convert(spec, state_dict)


def convert_checkpoint(timm_name: str, checkpoint: str, outdir: str) -> dict[str, Any]:
    """Read a timm checkpoint file, convert it, and write an lcnn pretrained directory.

    Everything is validated before anything is written; returns a summary for the CLI.
    """
    from lcnn_jax.interop.pretrained import save_pretrained, spec_record
    from lcnn_jax.interop.torch_files import load_state_dict

    t = _timm_model(timm_name)
    state_dict = load_state_dict(checkpoint)
    model, variables = from_timm(timm_name, state_dict)
    record = spec_record(model.spec, t.preset, t.padding, framework="timm", timm_name=timm_name, checkpoint=str(checkpoint))
    path = save_pretrained(outdir, record, variables)
    n_params = sum(int(np.prod(v.shape)) for v in jax.tree_util.tree_leaves(variables["params"]))
    return dict(outdir=str(path), preset=t.preset, width=model.spec.width, num_classes=model.spec.num_classes,
                tensors=len(jax.tree_util.tree_leaves(variables)), params=n_params)
