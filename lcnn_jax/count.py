"""MACs, FLOPs, params, activations and bytes moved, for any Flax module, read off its jaxpr.

Nothing is compiled: one `jax.make_jaxpr(module.init)` trace gives the variable shapes and the
forward computation. Every `conv_general_dilated` and `dot_general` that depends on the input
is one layer row, named by the Flax module path it ran in.

Conventions (see README, "Counting conventions"):
  macs         H_out*W_out*C_out*(C_in/groups)*k_h*k_w per conv; batch*M*N*K per dot_general.
  flops        2 * macs.
  params       every leaf of the 'params' collection (BN running stats are state, not params).
  activations  output elements of every conv and dense layer.
  bytes        per layer: weights + input + output, at their traced dtypes.
  intensity    flops / bytes (FLOP per byte), the x-axis of a roofline.

lcnn's fused depthwise formulation has no conv op in its jaxpr, so counting forces every lcnn
`Conv` onto its native formulation; counts are identical under either `impl`.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from lcnn_jax.layers import force_native_convs
from lcnn_jax.spec import NetSpec


@dataclasses.dataclass(frozen=True)
class LayerCount:
    """One conv or dense op: where it ran, its shapes and its cost (per traced batch)."""

    name: str
    op: str  # conv | depthwise_conv | grouped_conv | dense
    in_shape: tuple[int, ...]
    kernel_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    macs: int
    activations: int
    bytes: int
    params: int = 0  # params of this layer's module and its op-less siblings (e.g. its BN)

    @property
    def flops(self) -> int:
        """Two FLOPs per multiply-add."""
        return 2 * self.macs

    @property
    def intensity(self) -> float:
        """Arithmetic intensity in FLOP per byte moved."""
        return self.flops / self.bytes if self.bytes else 0.0

    @property
    def stride(self) -> int:
        """Spatial stride of a conv (out = ceil(in / stride) under either padding); 1 for dense."""
        return max(1, round(self.in_shape[1] / self.out_shape[1])) if self.op != "dense" else 1

    @property
    def groups(self) -> int:
        """feature_group_count of a conv (input channels / kernel input channels); 1 for dense."""
        return self.in_shape[-1] // self.kernel_shape[2] if self.op != "dense" else 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready row."""
        d = dataclasses.asdict(self)
        d.update(flops=self.flops, intensity=round(self.intensity, 3))
        for k in ("in_shape", "kernel_shape", "out_shape"):
            d[k] = list(d[k])
        return d


@dataclasses.dataclass(frozen=True)
class Counts:
    """Totals for one forward pass at `batch` images, plus the per-layer rows."""

    macs: int
    params: int
    activations: int
    bytes: int
    batch: int
    layers: tuple[LayerCount, ...]

    @property
    def flops(self) -> int:
        """Two FLOPs per multiply-add."""
        return 2 * self.macs

    @property
    def unattributed_params(self) -> int:
        """Params in modules that share no path prefix with any conv/dense layer."""
        return self.params - sum(layer.params for layer in self.layers)

    def as_dict(self, per_layer: bool = False) -> dict[str, Any]:
        """JSON-ready totals (integers), with the layer rows when `per_layer`."""
        d = dict(
            macs=self.macs, flops=self.flops, params=self.params, activations=self.activations,
            bytes=self.bytes, batch=self.batch,
        )
        if per_layer:
            d["layers"] = [layer.as_dict() for layer in self.layers]
        return d


def _size(aval) -> int:
    return math.prod(aval.shape)


def _nbytes(aval) -> int:
    return _size(aval) * jnp.dtype(aval.dtype).itemsize


def _conv_row(eqn, name: str) -> LayerCount:
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    out = eqn.outvars[0].aval
    dn = eqn.params["dimension_numbers"]
    kernel_out = rhs.shape[dn.rhs_spec[0]]
    kernel_in = rhs.shape[dn.rhs_spec[1]]
    lhs_in = lhs.shape[dn.lhs_spec[1]]
    groups = eqn.params["feature_group_count"]
    # Each output element sums over (C_in / groups) * k_h * k_w products: the kernel's
    # size per output channel.
    macs = _size(out) * (_size(rhs) // kernel_out)
    if groups == 1:
        op = "conv"
    elif groups == lhs_in and kernel_in == 1:
        op = "depthwise_conv"
    else:
        op = "grouped_conv"
    return LayerCount(
        name, op, tuple(lhs.shape), tuple(rhs.shape), tuple(out.shape), macs, _size(out),
        _nbytes(lhs) + _nbytes(rhs) + _nbytes(out),
    )


def _dot_row(eqn, name: str) -> LayerCount:
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    out = eqn.outvars[0].aval
    (lhs_contract, _), _ = eqn.params["dimension_numbers"]
    contract = math.prod(lhs.shape[d] for d in lhs_contract)
    return LayerCount(
        name, "dense", tuple(lhs.shape), tuple(rhs.shape), tuple(out.shape), _size(out) * contract, _size(out),
        _nbytes(lhs) + _nbytes(rhs) + _nbytes(out),
    )


_ROWS = {"conv_general_dilated": _conv_row, "dot_general": _dot_row}


def _join(outer: str, inner: str) -> str:
    if not outer:
        return inner
    if not inner or inner.startswith(outer):
        return inner or outer
    return f"{outer}/{inner}"


def _scaled(row: LayerCount, times: int) -> LayerCount:
    return dataclasses.replace(
        row, macs=row.macs * times, activations=row.activations * times, bytes=row.bytes * times
    )


def _inner_live(eqn, sub, live_in: list[bool]) -> set:
    """Which of a nested jaxpr's inputs carry data, given which of the call's inputs do."""
    if len(sub.invars) == len(live_in):
        return {v for v, lv in zip(sub.invars, live_in) if lv}
    if eqn.primitive.name == "cond" and len(sub.invars) == len(live_in) - 1:
        return {v for v, lv in zip(sub.invars, live_in[1:]) if lv}
    return set(sub.invars) if any(live_in) else set()


def _walk(jaxpr, prefix: str, out: list[LayerCount], live: set) -> None:
    """Append a row per data-dependent conv/dot in `jaxpr`, descending into nested jaxprs.

    `live` holds the variables that depend on the traced inputs. Ops that do not (parameter
    initialisers in an init trace, for example) are skipped, so tracing `init` counts exactly
    the forward pass.
    """
    for eqn in jaxpr.eqns:
        live_in = [not isinstance(v, jcore.Literal) and v in live for v in eqn.invars]
        if not any(live_in):
            continue
        live.update(eqn.outvars)
        name = _join(prefix, str(eqn.source_info.name_stack))
        prim = eqn.primitive.name
        if prim in _ROWS:
            out.append(_ROWS[prim](eqn, name))
            continue
        subs = list(jcore.jaxprs_in_params(eqn.params))
        if prim == "cond":
            # Only one branch runs: count the most expensive one.
            branch_rows = []
            for sub in subs:
                rows: list[LayerCount] = []
                _walk(sub, name, rows, _inner_live(eqn, sub, live_in))
                branch_rows.append(rows)
            out.extend(max(branch_rows, key=lambda rows: sum(r.macs for r in rows)))
            continue
        times = eqn.params.get("length", 1) if prim == "scan" else 1
        for sub in subs:
            rows = []
            _walk(sub, name, rows, _inner_live(eqn, sub, live_in))
            out.extend(_scaled(r, times) for r in rows)


def _module_path(name_stack: str, root: str) -> str:
    """Module path from a flax name stack: drop the root class and method scopes ('conv.convolve')."""
    parts: list[str] = []
    for part in name_stack.split("/"):
        if parts and part.startswith(parts[-1] + "."):
            continue  # a non-__call__ method of the module just entered
        parts.append(part)
    if parts and parts[0] == root:
        parts = parts[1:]
    return "/".join(parts) or root


def _unique_names(rows: list[LayerCount]) -> list[LayerCount]:
    seen: collections.Counter[str] = collections.Counter()
    result = []
    for r in rows:
        n = seen[r.name]
        seen[r.name] += 1
        result.append(r if n == 0 else dataclasses.replace(r, name=f"{r.name}#{n}"))
    return result


def _module_paths(params) -> list[tuple[tuple[str, ...], int]]:
    """(module path, size) of every parameter leaf; the path excludes the leaf's own name."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return [(tuple(str(k.key) for k in path[:-1]), _size(leaf)) for path, leaf in leaves]


def _common_prefix(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _attribute_params(rows: list[LayerCount], params) -> list[LayerCount]:
    """Give each parameter to the layer whose module path shares the longest prefix with it.

    A conv's own kernel and bias share its whole path; its BN (a sibling module with no op of
    its own) shares the parent. Params that share nothing with any layer stay unattributed.
    """
    paths = [tuple(r.name.split("#")[0].split("/")) for r in rows]
    owned = [0] * len(rows)
    for ppath, size in _module_paths(params):
        best, best_len = None, 0
        for i, lpath in enumerate(paths):
            n = _common_prefix(ppath, lpath)
            if n > best_len:
                best, best_len = i, n
        if best is not None:
            owned[best] += size
    return [dataclasses.replace(r, params=p) for r, p in zip(rows, owned)]


def _abstract(x):
    return jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))


def count(module: nn.Module, *inputs, method: str | None = None, **apply_kwargs) -> Counts:
    """Count `module` applied to `inputs` (arrays or ShapeDtypeStructs) without compiling.

    `apply_kwargs` are passed to both init and apply (e.g. ``train=False``). The first input's
    leading axis is the batch; totals are for the whole traced batch.
    """
    inputs = jax.tree_util.tree_map(_abstract, inputs)

    def init(*xs):
        key = jax.random.key(0)
        return module.init({"params": key, "dropout": key}, *xs, method=method, **apply_kwargs)

    # One trace of init gives both the variable shapes and the forward computation (init runs
    # the forward pass); tracing apply as well would double the cost for no new information.
    # flax_profile puts each module call in a jax.named_scope: that is where layer names come from.
    with flax.config.temp_flip_flag("profile", True), nn.intercept_methods(force_native_convs):
        closed, variables = jax.make_jaxpr(init, return_shape=True)(*inputs)
    rows: list[LayerCount] = []
    _walk(closed.jaxpr, "", rows, set(closed.jaxpr.invars))
    root = type(module).__name__
    rows = _unique_names([dataclasses.replace(r, name=_module_path(r.name, root)) for r in rows])
    params = variables.get("params", {})
    rows = _attribute_params(rows, params)
    batch = jax.tree_util.tree_leaves(inputs)[0].shape[0] if jax.tree_util.tree_leaves(inputs) else 1
    return Counts(
        macs=sum(r.macs for r in rows),
        params=sum(size for _, size in _module_paths(params)),
        activations=sum(r.activations for r in rows),
        bytes=sum(r.bytes for r in rows),
        batch=batch,
        layers=tuple(rows),
    )


def count_spec(spec: NetSpec, batch: int = 1) -> Counts:
    """Counts of the network `spec` describes, at its resolution, for `batch` images."""
    from lcnn_jax.net import Net

    x = jax.ShapeDtypeStruct((batch, spec.resolution, spec.resolution, spec.in_channels), jnp.float32)
    return count(Net(spec), x, train=False)
