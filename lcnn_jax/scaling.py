"""Scaling strategies and the matched-MACs solver.

Every strategy is a one-knob family of specs grown from a base spec:

  depth          depth multiplier d                      (width 1, base resolution)
  width          width multiplier w
  resolution     resolution multiplier r (rounded to whole pixels)
  compound       EfficientNet: d = alpha**phi, w = beta**phi, r = gamma**phi; the knob is phi
  fast_compound  Dollar et al. 2021 (dWr): for a FLOPs multiple s, d = s**((1-a)/2),
                 w = s**(a/2), r = s**((1-a)/4), with a = the width share (0.8 by default)

`solve` finds the knob whose *realised* MACs (after round_filters/round_repeats and pixel
rounding, measured by the counter) are nearest to `target` x the base's MACs, and reports when
rounding leaves no value within the tolerance. Specs are classifier `NetSpec`s or detector specs
(anything with `.scale(depth, width, resolution)`, `.resolution`, `.depth` and `.width`).
"""

from __future__ import annotations

import dataclasses
import functools
import math

from lcnn_jax.config import STRATEGIES
from lcnn_jax.count import Counts, count_spec
from lcnn_jax.errors import ConfigError, unknown_choice
from lcnn_jax.spec import NetSpec, scale



@dataclasses.dataclass(frozen=True)
class Coefficients:
    """Compound coefficients (alpha depth, beta width, gamma resolution) and the dWr width share."""

    alpha: float = 1.2
    beta: float = 1.1
    gamma: float = 1.15
    share: float = 0.8

    @property
    def flops_growth(self) -> float:
        """MACs growth per unit of phi: alpha * beta**2 * gamma**2 (EfficientNet aims at 2)."""
        return self.alpha * self.beta**2 * self.gamma**2


def derived_gamma(alpha: float, beta: float, constraint: float = 2.0) -> float:
    """The gamma that makes alpha * beta**2 * gamma**2 equal `constraint` exactly."""
    if alpha <= 0 or beta <= 0:
        raise ConfigError(f"alpha and beta must be > 0, got {alpha}, {beta}")
    return math.sqrt(constraint / (alpha * beta**2))


def multipliers(strategy: str, knob: float, coeffs: Coefficients = Coefficients()) -> tuple[float, float, float]:
    """(depth, width, resolution) multipliers of `strategy` at `knob`."""
    if strategy == "depth":
        return knob, 1.0, 1.0
    if strategy == "width":
        return 1.0, knob, 1.0
    if strategy == "resolution":
        return 1.0, 1.0, knob
    if strategy == "compound":
        return coeffs.alpha**knob, coeffs.beta**knob, coeffs.gamma**knob
    if strategy == "fast_compound":
        a = coeffs.share
        return knob ** ((1 - a) / 2), knob ** (a / 2), knob ** ((1 - a) / 4)
    raise unknown_choice("scaling strategy", strategy, STRATEGIES)


def apply(base, strategy: str, knob: float, coeffs: Coefficients = Coefficients()):
    """`base` grown by `strategy` at `knob` (resolution rounded to whole pixels, or to the spec's
    `resolution_step` where it has one, e.g. YOLO's 32).

    `base` is a NetSpec or any spec with a `.scale(depth, width, resolution)` method (detectors).
    """
    d, w, r = multipliers(strategy, knob, coeffs)
    step = getattr(base, "resolution_step", 1)
    res = max(step, step * int(round(base.resolution * r / step)))
    if isinstance(base, NetSpec):
        return scale(base, depth=d, width=w, resolution=res)
    return base.scale(depth=d, width=w, resolution=res)


def initial_knob(strategy: str, target: float, coeffs: Coefficients = Coefficients()) -> float:
    """The knob that would hit `target` if MACs grew exactly as d * w**2 * r**2."""
    if strategy == "depth":
        return target
    if strategy in ("width", "resolution"):
        return math.sqrt(target)
    if strategy == "compound":
        return math.log(target) / math.log(coeffs.flops_growth)
    if strategy == "fast_compound":
        return target
    raise unknown_choice("scaling strategy", strategy, STRATEGIES)


@dataclasses.dataclass(frozen=True)
class Scaled:
    """A solved strategy: the spec, its knob and multipliers, and target vs realised MACs."""

    spec: NetSpec
    strategy: str
    target: float
    knob: float
    base_macs: int
    macs: int
    tolerance: float

    @property
    def ratio(self) -> float:
        """Realised MACs multiple of the base."""
        return self.macs / self.base_macs

    @property
    def error(self) -> float:
        """Relative miss: ratio / target - 1."""
        return self.ratio / self.target - 1.0

    @property
    def within_tolerance(self) -> bool:
        """Whether the realised MACs land within the tolerance of the target."""
        return abs(self.error) <= self.tolerance

    @property
    def note(self) -> str:
        """Empty when on target; otherwise why not."""
        if self.within_tolerance:
            return ""
        return (f"rounding makes {self.tolerance * 100:g}% impossible: the nearest realisable {self.strategy} "
                f"model has {self.ratio:.3f}x the base MACs for target {self.target:g}x")

    def record(self) -> dict:
        """Flat fields for summaries and results.csv."""
        return dict(
            strategy=self.strategy, target=self.target, knob=self.knob, base_macs=self.base_macs,
            target_macs=int(round(self.target * self.base_macs)), realised_macs=self.macs,
            realised_ratio=self.ratio, macs_error=self.error, within_tolerance=self.within_tolerance,
            scaling_note=self.note, depth=self.spec.depth, width=self.spec.width, resolution=self.spec.resolution,
        )


@functools.lru_cache(maxsize=4096)
def counts(spec) -> Counts:
    """Counter totals of `spec` (a NetSpec or a detector spec) at batch 1, memoised: specs are frozen
    and hashable, and the solver, dry runs and training all count the same few specs."""
    if isinstance(spec, NetSpec):
        return count_spec(spec)
    from lcnn_jax.detect.registry import count_detector  # flax detector modules load only when needed

    return count_detector(spec)


def realised_macs(spec) -> int:
    """MACs of `spec` from the counter (memoised)."""
    return counts(spec).macs


def solve(
    base, strategy: str, target: float, coeffs: Coefficients = Coefficients(), tolerance: float = 0.05,
    max_iterations: int = 60, max_refinements: int = 16,
) -> Scaled:
    """The knob of `strategy` whose realised MACs are nearest to `target` x base (log scale).

    Regula falsi (Illinois variant) on log(MACs) against log(knob), which is nearly linear, so a
    few counter calls bracket the target; it stops once a side is within half of the
    tolerance or the bracket has closed on one rounding step, and returns the closer side.
    Counts are memoised per spec, so revisiting a rounding plateau costs nothing.
    """
    if strategy not in STRATEGIES:
        raise unknown_choice("scaling strategy", strategy, STRATEGIES)
    if not (isinstance(target, (int, float)) and math.isfinite(target) and target > 0):
        raise ConfigError(f"scaling.target must be a MACs multiple > 0, got {target!r}")
    base_macs = realised_macs(base)
    goal = math.log(target * base_macs)
    # Work in u = log(knob); compound's knob is phi itself, which may be <= 0.
    to_knob = (lambda u: u) if strategy == "compound" else math.exp
    from_knob = (lambda k: k) if strategy == "compound" else math.log

    def f(u: float) -> float:
        try:
            return math.log(realised_macs(apply(base, strategy, to_knob(u), coeffs))) - goal
        except ConfigError:  # e.g. a resolution below the network's stride
            return -math.inf

    def result(u: float) -> Scaled:
        spec = apply(base, strategy, to_knob(u), coeffs)
        return Scaled(spec, strategy, float(target), to_knob(u), base_macs, realised_macs(spec), tolerance)

    close_enough = math.log1p(tolerance) / 2  # within half the tolerance: stop refining
    step = 0.5 if strategy == "compound" else math.log(1.5)
    lo = hi = from_knob(initial_knob(strategy, target, coeffs))
    flo = fhi = f(lo)
    for _ in range(max_iterations):  # widen until the target is bracketed
        if flo > 0:
            lo -= step
            flo = f(lo)
        elif fhi < 0:
            hi += step
            fhi = f(hi)
        else:
            break
    if flo > 0 or fhi < 0:  # not bracketable within the iteration budget: best effort
        return result(lo if abs(flo) < abs(fhi) else hi)
    slo, shi, side = flo, fhi, 0  # secant weights (Illinois halves the stale one)
    for _ in range(max_refinements):
        if min(abs(flo), abs(fhi)) <= close_enough or hi - lo < 1e-9:
            break
        mid = (lo + hi) / 2 if not math.isfinite(slo) else hi - shi * (hi - lo) / (shi - slo)
        mid = min(max(mid, lo + 1e-3 * (hi - lo)), hi - 1e-3 * (hi - lo))
        fm = f(mid)
        if fm <= 0:
            lo, flo, slo = mid, fm, fm
            if side == -1:
                shi /= 2
            side = -1
        else:
            hi, fhi, shi = mid, fm, fm
            if side == 1:
                slo /= 2
            side = 1
    # MACs are a step function of the knob; when secant steps stall on a step (a resolution that
    # crosses a stride boundary, say), bisect until the bracket spans a single step.
    for _ in range(max_iterations):
        if min(abs(flo), abs(fhi)) <= close_enough or hi - lo < 1e-6:
            break
        mid = (lo + hi) / 2
        fm = f(mid)
        lo, flo, hi, fhi = (mid, fm, hi, fhi) if fm <= 0 else (lo, flo, mid, fm)
    # A side whose spec cannot be built (a resolution below the stride, when scaling down) never wins.
    sides = [u for u, fu in ((lo, flo), (hi, fhi)) if math.isfinite(fu)]
    return min((result(u) for u in sides), key=lambda s: abs(math.log(s.ratio / s.target)))
