"""Compress vs scale: three ways to make one base cheaper, compared at equal model bytes and MACs.

Scaling down (width or resolution, solved to 1/2 and 1/4 of the base's MACs), gradual magnitude
pruning (50/75/90% of the prunable kernels) and quantization (8/4-bit QAT, and int8 PTQ of the
float weights) all start from the same base and training budget. A run's cost is its model bytes
(kernels at their precision; a pruned model as bitmap + non-zero values) and its MACs (a pruned
model's effective MACs: each layer's MACs times its kernel density). Quantization leaves the MAC
count alone; each MAC gets cheaper instead, which a MACs axis cannot show.
"""

from __future__ import annotations

from lcnn_jax.experiment import kit

TITLE = "Compress vs scale: scaling down, pruning and quantization at matched bytes and MACs"
KIND = "train"
SMOKE_MINUTES = 20

KEYS = ("series", "model", "width", "depth", "resolution", "config.compress.sparsity", "config.compress.bits")
# Fractions of the base's bytes at which the methods are lined up against each other.
MATCH_AT = (0.5, 0.25, 0.125)


def _setting(p: dict) -> str:
    if p["series"] == "prune":
        return f"{100 * p['config.compress.sparsity']:g}% sparse"
    if p["series"] == "quantize":
        return f"W{p['config.compress.bits']}A8 QAT"
    if p["series"] in ("width", "resolution"):
        return f"width {p['width']:.3g}, {p['resolution']} px"
    return "dense float32"


def method_points(rows: list[dict]) -> tuple[dict, dict[str, list[dict]]]:
    """The base point and each method's points as {label, bytes, macs, mean, std, n}, base first."""
    pts = kit.points(rows, keys=KEYS)
    base = next(p for p in pts if p["series"] == "base")

    def point(p: dict, label: str, *, ptq: bool = False) -> dict:
        pruned = p["series"] == "prune"
        return dict(label=label, bytes=p["ptq_model_bytes"] if ptq else p["model_bytes"],
                    macs=p["effective_macs"] if pruned else p["macs"],
                    mean=p["ptq_top1"] if ptq else p["mean"], std=0.0 if ptq else p["std"], n=p["n"],
                    agreement=p.get("ptq_agreement") if ptq else None)

    origin = point(base, "base")
    methods: dict[str, list[dict]] = {}
    for p in pts:
        if p["series"] != "base":
            methods.setdefault(p["series"], [origin]).append(point(p, _setting(p)))
    methods["int8 PTQ"] = [origin, point(base, "int8 PTQ of the base", ptq=True)]
    prune = [p for p in pts if p["series"] == "prune" and p.get("ptq_top1") is not None]
    if prune:
        methods["prune + int8 PTQ"] = [methods["int8 PTQ"][1]] + [
            point(p, _setting(p) + " + int8 PTQ", ptq=True) for p in prune]
    for curve in methods.values():
        curve.sort(key=lambda q: -q["bytes"])
    return origin, methods


def matched(origin: dict, methods: dict[str, list[dict]]) -> list[tuple]:
    """For each bytes fraction, every method's point nearest to it (within a factor 1.5), best top-1 first."""
    rows = []
    for frac in MATCH_AT:
        want = frac * origin["bytes"]
        picks = []
        for name, curve in methods.items():
            near = min(curve[1:], key=lambda q: abs(q["bytes"] / want - 1), default=None)
            if near and 1 / 1.5 <= near["bytes"] / want <= 1.5:
                picks.append((name, near))
        for name, q in sorted(picks, key=lambda t: -t[1]["mean"]):
            rows.append((f"{frac:g}x", name, q["label"], f"{q['bytes'] / origin['bytes']:.3f}",
                         f"{q['macs'] / origin['macs']:.3f}", kit.pct(q),
                         f"{100 * (q['mean'] - origin['mean']):+.2f}"))
    return rows


def analyze(result) -> None:
    """table.md, top1_vs_bytes.png and top1_vs_macs.png."""
    if not any(p["series"] == "base" for p in kit.points(result.rows, keys=KEYS)):
        kit.write_markdown(result.out / "table.md", TITLE, [("No result yet", "the base run has not completed")])
        return
    origin, methods = method_points(result.rows)
    every = []
    for name, curve in methods.items():
        for q in curve[1:]:
            every.append((name, q["label"], f"{q['bytes'] / 1e3:,.0f} kB", f"{q['bytes'] / origin['bytes']:.3f}",
                          kit.millions(q["macs"], 2), f"{q['macs'] / origin['macs']:.3f}", kit.pct(q),
                          f"{100 * (q['mean'] - origin['mean']):+.2f}",
                          f"{100 * q['agreement']:.2f}" if q["agreement"] is not None else "-"))
    curves = {name: [dict(q, series=name) for q in curve] for name, curve in methods.items()}
    from lcnn_jax.plots import curves_plot

    curves_plot(curves, "bytes", "model bytes (log)", "ema_top1 (%)", result.out / "top1_vs_bytes.png",
                f"Compress vs scale ({result.size}): top-1 against model bytes", logx=True)
    curves_plot({k: v for k, v in curves.items() if k != "quantize"}, "macs", "(effective) MACs per image (log)",
                "ema_top1 (%)", result.out / "top1_vs_macs.png",
                f"Compress vs scale ({result.size}): top-1 against MACs (QAT keeps the base's MACs)", logx=True)
    head = ("method", "setting", "bytes", "vs base", "MACs", "vs base", "top-1 %", "Δ points", "PTQ agreement %")
    kit.write_markdown(result.out / "table.md", TITLE, [
        (f"Base: {origin['bytes'] / 1e3:,.0f} kB, {kit.millions(origin['macs'], 2)} MACs, top-1 {kit.pct(origin)} %",
         kit.markdown_table(head, every, right=(False, False) + (True,) * 7)),
        ("Matched bytes: each method's point nearest to a fraction of the base's bytes, best first",
         kit.markdown_table(("bytes target", "method", "setting", "bytes", "MACs", "top-1 %", "Δ points"),
                            matched(origin, methods), right=(False, False, False) + (True,) * 4)),
    ])
