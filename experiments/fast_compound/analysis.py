"""Dollar et al. 2021 ("Fast and Accurate Model Scaling"): compound vs dWr scaling.

For a FLOPs multiple s, a strategy's activations grow as s**e. Width adds FLOPs quadratically
but activations linearly, so spending most of the exponent on width (dWr, share 0.8) keeps e
near 0.6, while EfficientNet's compound (1.2, 1.1, 1.15) has e near 0.85; runtime follows
activations more than FLOPs on memory-bound hardware. We count activations and measure the
inference time of every model, and fit the exponents on log-log axes.
"""

import math

import numpy as np

from lcnn_jax.experiment import kit
from lcnn_jax.plots import pyplot
from lcnn_jax.scaling import Coefficients

TITLE = "Fast compound (dWr) vs compound scaling: activations and measured runtime against FLOPs"
KIND = "bench"
SMOKE_MINUTES = 5
BATCH = {"smoke": 8, "full": 64}


def theoretical_exponent(d_share: float, w_share: float, r_share: float) -> float:
    """Activation exponent for FLOPs shares (d, w^2, r^2 exponents summing to 1): d + w/2 + r."""
    return d_share + w_share / 2 + r_share


def compound_shares(c: Coefficients = Coefficients()) -> tuple[float, float, float]:
    """How compound coefficients split the FLOPs exponent between d, w^2 and r^2."""
    logs = (math.log(c.alpha), 2 * math.log(c.beta), 2 * math.log(c.gamma))
    return tuple(x / sum(logs) for x in logs)


def dwr_shares(c: Coefficients = Coefficients()) -> tuple[float, float, float]:
    """dWr's split: the width share to w^2, the rest halved between d and r^2."""
    return (1 - c.share) / 2, c.share, (1 - c.share) / 2


def measure(config_dict: dict, batch: int) -> tuple[float, float]:
    """(compile s, median s per inference call) of the run's model at `batch`."""
    import jax
    import jax.numpy as jnp

    from lcnn_jax.bench import compile_and_time
    from lcnn_jax.config import make_config
    from lcnn_jax.net import Net
    from lcnn_jax.resolve import dataset_num_classes, resolve_model

    config = make_config(config_dict)
    spec, _ = resolve_model(config, dataset_num_classes(config.data))
    model = Net(spec)
    x = jnp.zeros((batch, spec.resolution, spec.resolution, spec.in_channels), jnp.float32)
    variables = jax.jit(lambda k: model.init(k, x[:1], train=False))(jax.random.key(0))
    return compile_and_time(lambda v, x: model.apply(v, x, train=False), variables, x, repeats=5)


def fit(xs, ys) -> float:
    """Slope of log(y) against log(x)."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def curve(rows: list[dict], strategy: str) -> list[dict]:
    """The strategy's models by MACs, starting at the shared base (target 1 resolves to strategy none)."""
    return sorted((r for r in rows if r["strategy"] in (strategy, "none")), key=lambda r: r["macs"])


def analyze(result) -> None:
    """Measure every model, fit exponents, write table.md and scaling.png."""
    from tqdm import tqdm

    batch = BATCH[result.size]
    unique = {r["run_id"]: r for r in result.rows}.values()
    rows = []
    for r in tqdm(sorted(unique, key=lambda r: (r["strategy"], r["target"])), desc="timing models", unit="model"):
        _, seconds = measure(r["config"], batch)
        rows.append(dict(r, ms_per_image=1e3 * seconds / batch))
    # Theory with the coefficients the runs used (every run of the sweep shares them).
    r = next(r for r in unique if r["strategy"] != "none")  # its scaling record holds the (derived) coefficients
    coeffs = Coefficients(r["alpha"], r["beta"], r["gamma"], r["config"]["scaling"]["share"])
    shares = {"compound": compound_shares(coeffs), "fast_compound": dwr_shares(coeffs)}
    table, fits = [], []
    for strategy in ("compound", "fast_compound"):
        rs = curve(rows, strategy)
        if len(rs) < 2:
            continue
        base = rs[0]
        for r in rs:
            table.append((strategy if r["strategy"] != "none" else "base", f"{r['target']:g}", f"{r['realised_ratio']:.3f}", f"{r['depth']:.3f}", f"{r['width']:.3f}",
                          r["resolution"], f"{2 * r['macs'] / 1e9:.3f}", f"{r['activations'] / 1e6:.2f}M",
                          f"{r['activations'] / base['activations']:.2f}x", f"{r['ms_per_image']:.2f}"))
        flops = [2 * r["macs"] for r in rs]
        fits.append((strategy, f"{theoretical_exponent(*shares[strategy]):.3f}",
                     f"{fit(flops, [r['activations'] for r in rs]):.3f}", f"{fit(flops, [r['ms_per_image'] for r in rs]):.3f}"))
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for strategy, color in (("compound", "tab:red"), ("fast_compound", "tab:purple")):
        rs = curve(rows, strategy)
        if not rs:
            continue
        flops = [2 * r["macs"] / 1e9 for r in rs]
        axes[0].loglog(flops, [r["activations"] / 1e6 for r in rs], "o-", color=color, label=strategy)
        axes[1].loglog(flops, [r["ms_per_image"] for r in rs], "o-", color=color, label=strategy)
    for ax, ylabel in zip(axes, ("activations (M)", f"inference ms per image (batch {batch})")):
        ax.set_xlabel("GFLOPs (2 x MACs)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Compound vs dWr scaling ({result.size})", fontsize=10)
    fig.tight_layout()
    fig.savefig(result.out / "scaling.png")
    plt.close(fig)
    kit.write_markdown(result.out / "table.md", TITLE, [
        ("Every model", kit.markdown_table(
            ("strategy", "target", "realised", "depth", "width", "res", "GFLOPs", "activations", "acts vs base",
             f"ms/image (batch {batch})"), table, right=(False,) + (True,) * 9)),
        ("Growth exponents against FLOPs (log-log fit)", kit.markdown_table(
            ("strategy", "activations, theory", "activations, fitted", "runtime, fitted"), fits, right=(False, True, True, True))),
        ("Paper", "Dollar et al. 2021: dWr scaling (alpha = 0.8) grows activations as about s^0.6, compound-style "
                  "scaling closer to s^0.85, and runtime on accelerators tracks activations; hence dWr models run faster "
                  "at equal FLOPs."),
    ])
