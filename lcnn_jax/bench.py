"""Timing of jitted functions: cold compile time and per-call (median) time."""

from __future__ import annotations

import statistics
import time

import jax


def compile_and_times(fn, *args, repeats: int = 10) -> tuple[float, list[float]]:
    """(compile seconds, seconds of each of `repeats` calls) of `jax.jit(fn)` on `args`, after one warm-up."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(*args))
    runs = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t0)
    return compile_s, runs


def compile_and_time(fn, *args, repeats: int = 10) -> tuple[float, float]:
    """(compile seconds, median seconds per call) of `jax.jit(fn)` on `args`, after one warm-up."""
    compile_s, runs = compile_and_times(fn, *args, repeats=repeats)
    return compile_s, statistics.median(runs)
