"""Human-readable count tables: one network's per-layer rows, and every preset side by side."""

from __future__ import annotations

from typing import Iterable

from lcnn_jax.count import Counts, count_spec
from lcnn_jax.presets import PRESETS, get_spec
from lcnn_jax.published import published_for
from lcnn_jax.spec import NetSpec
from lcnn_jax.tables import text_table


def summary(spec: NetSpec, counts: Counts) -> dict:
    """The JSON object `lcnn count --json` prints: model, multipliers and integer totals."""
    return dict(
        model=spec.name,
        resolution=spec.resolution,
        width=spec.width,
        depth=spec.depth,
        num_classes=spec.num_classes,
        **counts.as_dict(),
    )


def _m(value: float) -> str:
    return f"{value / 1e6:,.2f}"


def per_layer_table(counts: Counts) -> str:
    """Per-layer rows: module path, op, output shape, MACs, params, activations, bytes, FLOP/byte."""
    rows = [
        (
            layer.name, layer.op, "x".join(map(str, layer.out_shape[1:])), f"{layer.macs:,}", f"{layer.params:,}",
            f"{layer.activations:,}", f"{layer.bytes:,}", f"{layer.intensity:.1f}",
        )
        for layer in counts.layers
    ]
    if counts.unattributed_params:
        rows.append(("(params outside any conv/dense module)", "", "", "", f"{counts.unattributed_params:,}", "", "", ""))
    rows.append(
        ("total", "", "", f"{counts.macs:,}", f"{counts.params:,}", f"{counts.activations:,}", f"{counts.bytes:,}",
         f"{counts.flops / counts.bytes:.1f}" if counts.bytes else "")
    )
    headers = ("layer", "op", "output", "MACs", "params", "activations", "bytes", "FLOP/B")
    return text_table(headers, rows, right=(False, False, False, True, True, True, True, True))


def totals_table(spec: NetSpec, counts: Counts) -> str:
    """A two-column summary of one network."""
    rows = [
        ("model", spec.name), ("resolution", spec.resolution), ("width", f"{spec.width:g}"),
        ("depth", f"{spec.depth:g}"), ("num_classes", spec.num_classes), ("MACs", f"{counts.macs:,}"),
        ("FLOPs", f"{counts.flops:,}"), ("params", f"{counts.params:,}"), ("activations", f"{counts.activations:,}"),
        ("bytes moved", f"{counts.bytes:,}"),
    ]
    return text_table(None, rows, right=(False, True))


def zoo_rows(names: Iterable[str]) -> list[tuple]:
    """Count each preset at its defaults and pair it with the published figure where one exists."""
    rows = []
    for name in names:
        spec = get_spec(name)
        c = count_spec(spec)
        p = PRESETS[name]
        pub = published_for(name, spec.width, spec.resolution, p.width, p.resolution)
        rows.append(
            (
                name, spec.resolution, f"{spec.width:g}", f"{spec.depth:g}", _m(c.macs), _m(c.params), _m(c.activations),
                _m(pub.macs) if pub else "", f"{c.macs / pub.macs:.3f}" if pub else "",
                _m(pub.params) if pub else "", f"{c.params / pub.params:.3f}" if pub else "",
            )
        )
    return rows


ZOO_HEADERS = (
    "model", "res", "width", "depth", "MACs (M)", "params (M)", "acts (M)",
    "paper MACs", "ratio", "paper params", "ratio",
)


def zoo_table(rows: list[tuple]) -> str:
    """Render `zoo_rows` as a text table (MACs = Mult-Adds; FLOPs = 2 x MACs)."""
    return text_table(ZOO_HEADERS, rows, right=(False,) + (True,) * (len(ZOO_HEADERS) - 1))
