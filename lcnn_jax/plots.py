"""Error-bar curves (accuracy against cost), shared by sweep reports and experiment analyses."""

from __future__ import annotations

from pathlib import Path

# Fixed colours for scaling strategies; other series cycle through the default palette.
STYLE = {"none": ("black", "s"), "depth": ("tab:blue", "o"), "width": ("tab:orange", "^"),
         "resolution": ("tab:green", "v"), "compound": ("tab:red", "D"), "fast_compound": ("tab:purple", "P")}
_CYCLE = (("tab:blue", "o"), ("tab:orange", "^"), ("tab:green", "v"), ("tab:red", "D"), ("tab:purple", "P"),
          ("tab:brown", "X"), ("tab:pink", "*"), ("tab:gray", "s"), ("tab:olive", "h"), ("tab:cyan", "<"))


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves_plot(curves: dict[str, list[dict]], x: str, xlabel: str, ylabel: str, path: Path, title: str,
                logx: bool = False, y: str = "mean", err: str | None = "std", scale: float = 100.0) -> Path | None:
    """One line per series through points {x, y, err}; y and err are multiplied by `scale` (100: %)."""
    plt = pyplot()
    curves = {k: sorted((p for p in v if p.get(x) is not None), key=lambda p: p[x]) for k, v in curves.items()}
    curves = {k: v for k, v in curves.items() if v}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    for i, (label, pts) in enumerate(curves.items()):
        color, marker = STYLE.get(label, _CYCLE[i % len(_CYCLE)])
        ax.errorbar([p[x] for p in pts], [scale * p[y] for p in pts],
                    yerr=[scale * (p.get(err) or 0.0) for p in pts] if err else None,
                    label=label, color=color, marker=marker, capsize=3, linewidth=1.5, markersize=5)
    if logx:
        ax.set_xscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
