"""Sweep files in W&B's sweep format: load, validate (naming line and key), expand into runs.

Only W&B's own top-level keys are accepted (its schema rejects any other), so everything
lcnn-specific is an ordinary run parameter (`scaling.strategy`, `scaling.target`, `train.seed`,
...), resolved by `lcnn train` when the run starts. Executor settings live on the command line.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lcnn_jax.config import Config, check_range, flat_keys, make_config, parse_value
from lcnn_jax.errors import ConfigError

# W&B sweep-config top-level keys (its JSON schema allows exactly these).
WANDB_TOP_LEVEL = ("program", "method", "metric", "parameters", "early_terminate", "name", "description",
                   "command", "project", "entity", "run_cap", "controller", "job", "image_uri", "apiVersion")
METHODS = ("grid", "random", "bayes")
DISTRIBUTIONS = ("uniform", "int_uniform", "log_uniform_values", "q_uniform", "categorical")
# Metrics a run logs to wandb (see lcnn_jax.train.loop): what a sweep may optimise.
METRICS = ("eval/top1", "eval/ema_top1", "eval/top5", "eval/ema_top5", "eval/loss", "eval/ema_loss", "train/loss",
           "eval/map", "eval/ema_map", "eval/map50", "eval/ema_map50")  # the last four: task=detection
ARGS_MACRO = "${args_no_hyphens}"


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One swept key: a fixed value, a list of values, or a distribution."""

    key: str
    values: tuple | None = None  # value or values
    distribution: str | None = None
    low: float | None = None
    high: float | None = None


@dataclasses.dataclass(frozen=True)
class SweepFile:
    """A validated sweep file."""

    path: Path
    name: str
    method: str
    metric: str
    goal: str
    parameters: tuple[Parameter, ...]
    raw: dict
    run_cap: int | None = None


class _Lines:
    """Line numbers of mapping keys in the YAML source, for error messages."""

    def __init__(self, text: str):
        self.lines: dict[tuple[str, ...], int] = {}
        try:
            root = yaml.compose(text)
        except yaml.YAMLError:
            root = None
        self._walk(root, ())

    def _walk(self, node, path):
        if isinstance(node, yaml.MappingNode):
            for key_node, value in node.value:
                key = (*path, str(key_node.value))
                self.lines[key] = key_node.start_mark.line + 1
                self._walk(value, key)

    def at(self, *path: str) -> str:
        """'line N' for the deepest known prefix of `path`."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.lines:
                return f"line {self.lines[path[:n]]}"
        return "line ?"


def _err(path: Path, where: str, message: str) -> ConfigError:
    return ConfigError(f"{path}: {where}: {message}")


def _parameter(path: Path, lines: _Lines, key: str, spec: Any, keys: dict) -> Parameter:
    where = lines.at("parameters", key)
    if key not in keys:
        near = [k for k in keys if k.split(".")[-1] == key.split(".")[-1]] or list(keys)[:8]
        raise _err(path, where, f"unknown parameter {key!r} (not a config key; e.g. {', '.join(near[:5])})")
    if not isinstance(spec, dict):
        raise _err(path, where, f"parameter {key!r} must be a mapping with value, values, or distribution/min/max")
    kinds = [k for k in ("value", "values", "distribution") if k in spec]
    extra = set(spec) - {"value", "values", "distribution", "min", "max", "q", "probabilities"}
    if len(kinds) != 1 and not (kinds == ["values", "distribution"] and spec["distribution"] == "categorical"):
        raise _err(path, where, f"parameter {key!r} needs exactly one of value, values, or distribution (+min/max)")
    if extra:
        raise _err(path, where, f"parameter {key!r} has unknown field(s) {', '.join(sorted(extra))}")
    t, field = keys[key]

    def checked(v):
        try:
            parsed = parse_value(key, t, v)
            check_range(key, parsed, field.metadata)
        except ConfigError as e:
            raise _err(path, where, str(e)) from None
        return parsed

    if "value" in spec:
        return Parameter(key, values=(checked(spec["value"]),))
    if "values" in spec:
        if not isinstance(spec["values"], list) or not spec["values"]:
            raise _err(path, where, f"parameter {key!r}: values must be a non-empty list")
        return Parameter(key, values=tuple(checked(v) for v in spec["values"]))
    dist = spec["distribution"]
    if dist not in DISTRIBUTIONS:
        raise _err(path, where, f"parameter {key!r}: distribution {dist!r} is not one of {', '.join(DISTRIBUTIONS)}")
    if "min" not in spec or "max" not in spec:
        raise _err(path, where, f"parameter {key!r}: distribution {dist} needs min and max")
    low, high = checked(spec["min"]), checked(spec["max"])
    if not low < high:
        raise _err(path, where, f"parameter {key!r}: min must be < max, got {low} and {high}")
    if dist == "log_uniform_values" and low <= 0:
        raise _err(path, where, f"parameter {key!r}: log_uniform_values needs min > 0")
    return Parameter(key, distribution=dist, low=low, high=high)


def load_sweep(path: str | Path) -> SweepFile:
    """Read and validate a sweep file; any problem raises ConfigError naming the line and key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "line ?"
        raise _err(path, where, f"not valid YAML ({getattr(e, 'problem', e)})") from None
    if not isinstance(raw, dict):
        raise _err(path, "line 1", "a sweep file is a mapping of W&B sweep keys")
    lines = _Lines(text)
    for key in raw:
        if key not in WANDB_TOP_LEVEL:
            raise _err(path, lines.at(str(key)), f"unknown top-level key {key!r}; W&B sweep files allow "
                       f"{', '.join(WANDB_TOP_LEVEL[:8])}, ... (executor settings go on the command line)")
    method = raw.get("method")
    if method not in METHODS:
        raise _err(path, lines.at("method"), f"method must be one of {', '.join(METHODS)}, got {method!r}")
    metric = raw.get("metric")
    if not isinstance(metric, dict) or "name" not in metric:
        raise _err(path, lines.at("metric"), "metric needs a name (e.g. eval/ema_top1) and a goal")
    if metric["name"] not in METRICS:
        raise _err(path, lines.at("metric", "name"), f"metric {metric['name']!r} is not logged; use one of {', '.join(METRICS)}")
    goal = metric.get("goal", "maximize")
    if goal not in ("maximize", "minimize"):
        raise _err(path, lines.at("metric", "goal"), f"goal must be maximize or minimize, got {goal!r}")
    command = raw.get("command")
    if command is not None and (not isinstance(command, list) or ARGS_MACRO not in command):
        raise _err(path, lines.at("command"), f"command must be a list containing {ARGS_MACRO} (so W&B agents pass key=value)")
    params = raw.get("parameters")
    if not isinstance(params, dict) or not params:
        raise _err(path, lines.at("parameters"), "parameters must be a non-empty mapping of config keys")
    keys = flat_keys()
    parameters = tuple(_parameter(path, lines, str(k), v, keys) for k, v in params.items())
    if method == "grid" and any(p.distribution for p in parameters):
        bad = next(p.key for p in parameters if p.distribution)
        raise _err(path, lines.at("parameters", bad), f"grid search needs values, not a distribution, for {bad!r}")
    run_cap = raw.get("run_cap")
    if method == "random" and not isinstance(run_cap, int):
        raise _err(path, lines.at("method"), "random search needs run_cap (the number of runs)")
    name = str(raw.get("name") or path.stem)
    return SweepFile(path, name, method, metric["name"], goal, parameters, raw, run_cap)


def _sample(p: Parameter, rng: np.random.Generator):
    if p.values is not None:
        return p.values[rng.integers(len(p.values))]
    if p.distribution == "int_uniform":
        return int(rng.integers(int(p.low), int(p.high) + 1))
    if p.distribution == "log_uniform_values":
        return float(math.exp(rng.uniform(math.log(p.low), math.log(p.high))))
    return float(rng.uniform(p.low, p.high))


def assignments(sweep: SweepFile) -> list[dict[str, Any]]:
    """Every run's parameter values: the grid in file order, or run_cap seeded random draws."""
    if sweep.method == "grid":
        keys = [p.key for p in sweep.parameters]
        return [dict(zip(keys, combo)) for combo in itertools.product(*(p.values for p in sweep.parameters))]
    if sweep.method == "bayes":
        raise ConfigError(f"{sweep.path}: method bayes needs a W&B server; use `lcnn sweep wandb` for it")
    rng = np.random.default_rng(zlib.crc32(sweep.name.encode()))  # the same draws on every invocation
    return [{p.key: _sample(p, rng) for p in sweep.parameters} for _ in range(sweep.run_cap)]


def as_overrides(values: dict[str, Any]) -> list[str]:
    """key=value strings, exactly what a W&B agent passes through ${args_no_hyphens}."""
    return [f"{k}={'None' if v is None else v}" for k, v in values.items()]


def run_configs(sweep: SweepFile, extra: list[str] | tuple[str, ...] = ()) -> list[Config]:
    """The resolved Config of every run (wandb group = sweep name, job_type = strategy)."""
    configs = []
    for values in assignments(sweep):
        config = make_config(overrides=as_overrides(values) + [f"wandb.group={sweep.name}", *extra])
        configs.append(dataclasses.replace(config, wandb=dataclasses.replace(config.wandb, job_type=config.scaling.strategy)))
    return configs
