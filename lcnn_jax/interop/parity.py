"""Numerical parity of lcnn against timm, through the path a user takes with a checkpoint file.

A randomly initialised timm model (BN affine params random; running statistics calibrated on a
random batch at the test resolution, then perturbed at random: neither the trivial 0/1 nor chaotic;
see `random_timm_model`) is saved as a .pth, converted with `convert_checkpoint` (what
`lcnn convert timm` runs), loaded back with `load_pretrained`, and both run in eval mode on the
same random images. Needs the `[torch]` extra.

Run:  .venv/bin/python -m lcnn_jax.interop.parity [--models a,b] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
from pathlib import Path

import jax
import numpy as np

from lcnn_jax.interop.pretrained import load_pretrained
from lcnn_jax.interop.timm import TIMM_MODELS, convert_checkpoint
from lcnn_jax.presets import PRESETS


@dataclasses.dataclass(frozen=True)
class ParityResult:
    """Largest logit difference relative to the largest logit, at one resolution."""

    timm_name: str
    resolution: int
    max_abs_diff: float
    max_abs_logit: float
    timm_float64_gap: float | None = None  # max|timm f32 - timm f64| / max|timm f64|

    @property
    def rel_diff(self) -> float:
        """max|lcnn - timm| / max|timm|."""
        return self.max_abs_diff / self.max_abs_logit


def native_resolution(timm_name: str) -> int:
    """The resolution the model was designed for (the preset's default)."""
    return PRESETS[TIMM_MODELS[timm_name].preset].resolution


def random_timm_model(timm_name: str, resolution: int, seed: int = 0):
    """A timm model in eval mode with random weights and random, non-trivial BN statistics.

    BN scales and shifts are drawn at random; running statistics are calibrated on a random
    batch at `resolution` and then perturbed at random (mean +-10% of std, variance x0.8-1.25).
    Residual branches end in a BN whose scale is drawn small (0.05-0.25), as in a trained net.
    Without that, a deep random EfficientNet is chaotic: rounding differences grow layer by
    layer until timm's own float32 and float64 logits differ by 30% or more (B5-B7), and no
    float32 port could be compared with it.
    """
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(timm_name, pretrained=False)
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    # The last BN of every block with a skip connection (InvertedResidual.bn3, DepthwiseSeparableConv.bn2).
    branch_ends = {id(getattr(m, "bn3", None) or m.bn2) for m in model.modules() if getattr(m, "has_skip", False)}
    with torch.no_grad():
        for bn in norms:
            low, high = (0.05, 0.25) if id(bn) in branch_ends else (0.5, 1.5)
            bn.weight.uniform_(low, high, generator=gen)
            bn.bias.uniform_(-0.2, 0.2, generator=gen)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average: one batch sets the statistics
        # Enough images that the 1/32-resolution maps give every channel >= ~1024 samples.
        batch = min(64, max(2, math.ceil(1024 / math.ceil(resolution / 32) ** 2)))
        model.train()(torch.randn(batch, 3, resolution, resolution, generator=gen))
        for bn in norms:
            bn.momentum = 0.1
            std = bn.running_var.sqrt()
            bn.running_mean.add_(std * torch.empty_like(std).uniform_(-0.1, 0.1, generator=gen))
            bn.running_var.mul_(torch.empty_like(std).uniform_(0.8, 1.25, generator=gen))
    return model.eval()


def check_parity(
    timm_name: str, resolution: int, workdir: str | Path, batch: int | None = None, seed: int = 0,
    float64_reference: bool = False,
) -> ParityResult:
    """Compare lcnn with timm for `timm_name` at one resolution; files go to a new folder in `workdir`.

    `batch` defaults to 2 images, 1 above 300 px. With `float64_reference`, also reports how far
    timm's float32 logits are from its own float64 ones: the floor any float32 implementation
    can reach on this random model.
    """
    import torch

    from lcnn_jax.net import Net

    if batch is None:
        batch = 1 if resolution > 300 else 2
    Path(workdir).mkdir(parents=True, exist_ok=True)
    # A fresh folder per check: reruns into the same --workdir never meet an earlier conversion.
    workdir = Path(tempfile.mkdtemp(prefix=f"{timm_name}-{resolution}-", dir=workdir))
    reference = random_timm_model(timm_name, resolution, seed)
    checkpoint = workdir / f"{timm_name}-{resolution}.pth"
    torch.save(reference.state_dict(), checkpoint)
    converted = workdir / f"{timm_name}-{resolution}-lcnn"
    convert_checkpoint(timm_name, str(checkpoint), str(converted))
    spec, variables = load_pretrained(converted)
    model = Net(spec)
    images = np.random.default_rng(seed + resolution).standard_normal((batch, 3, resolution, resolution))
    images = images.astype(np.float32)
    with torch.no_grad():
        want = reference(torch.from_numpy(images)).numpy()
        floor = None
        if float64_reference:
            want64 = reference.double()(torch.from_numpy(images).double()).numpy()
            floor = float(np.abs(want - want64).max() / np.abs(want64).max())
    got = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images.transpose(0, 2, 3, 1)))
    return ParityResult(timm_name, resolution, float(np.abs(got - want).max()), float(np.abs(want).max()), floor)


def parity_resolutions(timm_name: str) -> tuple[int, ...]:
    """The native resolution plus a small even one and an odd one (odd sizes test TF 'SAME')."""
    return (native_resolution(timm_name), 128, 97)


def main() -> None:
    """Print the parity table for the chosen (default: all) timm models."""
    from lcnn_jax.tables import markdown_table

    p = argparse.ArgumentParser(description="lcnn vs timm logits parity")
    p.add_argument("--models", default=",".join(TIMM_MODELS), help="comma-separated timm names")
    p.add_argument("--workdir", default=None, help="where the .pth and converted files go (default: a temp dir)")
    a = p.parse_args()
    import torch

    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            for r in parity_resolutions(name):
                res = check_parity(name, r, a.workdir or tmp, float64_reference=True)
                rows.append((name, TIMM_MODELS[name].preset, r, f"{res.rel_diff:.2e}", f"{res.timm_float64_gap:.2e}",
                             f"{res.max_abs_logit:.3g}"))
                print(*rows[-1], flush=True)
    headers = ("timm model", "lcnn preset", "resolution", "max rel diff", "timm f32 vs f64", "max abs logit")
    print(markdown_table(headers, rows, right=(False, False, True, True, True, True)))

if __name__ == "__main__":
    main()
