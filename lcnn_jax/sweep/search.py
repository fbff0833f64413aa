"""The EfficientNet (alpha, beta, gamma) search, automated: STEP 1 grid at phi=1, STEP 2 scale up.

STEP 1 runs every admissible candidate of the sweep file's grid (scaling.alpha x scaling.beta,
with gamma derived so alpha*beta^2*gamma^2 = constraint, or an explicit scaling.gamma list kept
only within the tolerance of the constraint) on the same budget and seeds, and ranks the
candidates by the sweep's metric, mean +- std over seeds. STEP 2 scales the base with the
winner to phi = 1..N. Both steps are ordinary sweep runs, so the search resumes like a sweep.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math
import statistics

from lcnn_jax.config import Config, ScalingConfig, make_config
from lcnn_jax.errors import ConfigError
from lcnn_jax.scaling import Coefficients, derived_gamma
from lcnn_jax.sweep.sweepfile import SweepFile, as_overrides, assignments


def candidates(alphas, betas, gammas=None, constraint: float = 2.0, tolerance: float = 0.05) -> tuple[list[Coefficients], list[tuple]]:
    """Admissible candidates and the rejected ones with the reason.

    Without `gammas`, gamma is derived to meet the constraint exactly and the pair is rejected
    when that gamma would be < 1. With `gammas`, all triples are tried and kept when
    |alpha*beta^2*gamma^2 / constraint - 1| <= tolerance. Every coefficient must be >= 1.
    """
    kept, rejected = [], []
    triples = ([(a, b, None) for a, b in itertools.product(alphas, betas)] if gammas is None
               else list(itertools.product(alphas, betas, gammas)))
    for a, b, g in triples:
        if min(a, b) < 1 or (g is not None and g < 1):
            rejected.append((a, b, g, "coefficients must be >= 1"))
            continue
        if g is None:
            g = derived_gamma(a, b, constraint)
            if g < 1:
                rejected.append((a, b, g, f"alpha*beta^2 = {Coefficients(a, b, 1.0).flops_growth:.3f} > {constraint:g}: "
                                          "gamma would be < 1"))
                continue
        c = Coefficients(a, b, g)
        if abs(c.flops_growth / constraint - 1) > tolerance:
            rejected.append((a, b, g, f"alpha*beta^2*gamma^2 = {c.flops_growth:.3f}, not within {tolerance:.0%} of {constraint:g}"))
            continue
        kept.append(c)
    return kept, rejected


def step1_configs(sweep: SweepFile, tolerance: float = 0.05) -> tuple[list[Config], list[tuple]]:
    """STEP 1 runs: the file's grid with compound scaling at phi=1, inadmissible triples dropped.

    A triple listed twice is one run: the runner's `runs_for` drops repeated configs.
    """
    rows = assignments(sweep)
    keys = {p.key for p in sweep.parameters}
    for required in ("scaling.alpha", "scaling.beta"):
        if required not in keys:
            raise ConfigError(f"{sweep.path}: a compound search sweeps {required} (values: [...])")
    configs, rejected = [], []
    for values in rows:
        values = dict(values, **{"scaling.strategy": "compound", "scaling.phi": 1.0})
        gamma = values.get("scaling.gamma")
        constraint = values.get("scaling.constraint", ScalingConfig().constraint)
        kept, why = candidates([values["scaling.alpha"]], [values["scaling.beta"]],
                               None if gamma is None else [gamma], constraint, tolerance)
        if not kept:
            rejected.extend(why)
            continue
        values["scaling.gamma"] = kept[0].gamma
        # job_type as STEP 2 uses: STEP 2 at phi=1 is then the winner's own run, not a retrain.
        configs.append(make_config(overrides=as_overrides(values) + [f"wandb.group={sweep.name}", "wandb.job_type=compound"]))
    return configs, sorted(set(rejected))


def rank(configs_and_metrics: list[tuple[Config, float]], goal: str = "maximize") -> list[dict]:
    """Candidates by mean metric over seeds (best first), with std and seed count."""
    groups = collections.defaultdict(list)
    for config, value in configs_and_metrics:
        s = config.scaling
        groups[(s.alpha, s.beta, s.gamma)].append(value)
    table = [dict(alpha=a, beta=b, gamma=g, mean=statistics.fmean(v), std=statistics.stdev(v) if len(v) > 1 else 0.0,
                  n=len(v)) for (a, b, g), v in groups.items()]
    return sorted(table, key=lambda r: r["mean"], reverse=goal == "maximize")


def step2_configs(step1: list[Config], best: dict, phis: list[float]) -> list[Config]:
    """STEP 2 runs: the base scaled with the winner at each phi, for every seed STEP 1 used."""
    seeds = sorted({c.train.seed for c in step1})
    template = step1[0]
    out = []
    for phi, seed in itertools.product(phis, seeds):
        # The template is a STEP 1 config: already compound, with job_type compound.
        scaling = dataclasses.replace(template.scaling, phi=float(phi), alpha=best["alpha"], beta=best["beta"],
                                      gamma=best["gamma"])
        out.append(dataclasses.replace(template, scaling=scaling, train=dataclasses.replace(template.train, seed=seed)))
    return out


def parse_phis(text: str) -> list[float]:
    """'1..3' or '1,2,3' -> [1.0, 2.0, 3.0]."""
    try:
        if ".." in text:
            lo, hi = (int(x) for x in text.split(".."))
            return [float(p) for p in range(lo, hi + 1)]
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--phis must look like 1..3 or 1,2,3, got {text!r}") from None
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ConfigError(f"--phis must be positive numbers, got {text!r}")
    return values
