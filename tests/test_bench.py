"""`lcnn bench`, step timing, the roofline model and the persistent compilation cache."""

import json
import os
import subprocess
import sys

import pytest

from lcnn_jax.bench import StepTiming, percentile, time_steps
from lcnn_jax.cli import main
from lcnn_jax.roofline import Machine


def test_step_timing_figures():
    t = StepTiming(batch=8, compile_s=1.0, seconds=(0.1, 0.2, 0.3, 0.4, 1.0))
    assert t.p50_ms == pytest.approx(300.0)
    assert t.p90_ms == pytest.approx(760.0)  # numpy's linear interpolation between 0.4 and 1.0
    assert t.img_per_s == pytest.approx(8 / 0.3)
    assert percentile([5.0], 90) == 5.0


def test_time_steps_threads_the_carry_and_sizes_itself():
    calls = []

    def step(c):
        calls.append(c)
        return c + 1

    t = time_steps(step, 0, batch=4, steps=None, warmup=2, budget_s=1.0)
    assert calls[:3] == [0, 1, 2]  # warm-up calls feed the timed ones
    assert 3 <= len(t.seconds) <= 30 and len(calls) == 2 + len(t.seconds)


def test_roofline_model():
    m = Machine(peak_flops=100e9, bandwidth=10e9)
    assert m.ridge == 10.0
    assert m.attainable(2.0) == 20e9 and m.attainable(50.0) == 100e9
    assert m.bound(9.9) == "memory" and m.bound(10.0) == "compute"


@pytest.mark.parametrize("train", (False, True))
def test_lcnn_bench_prints_throughput_latency_and_compile_time(capsys, train):
    argv = ["bench", "mobilenet_v3_small", "--resolution", "32", "--width", "0.35", "--batch", "4", "--steps", "3", "--json"]
    assert main(argv + (["--train"] if train else [])) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mode"] == ("train step" if train else "inference") and out["steps"] == 3
    assert out["compile_s"] > 0 and 0 < out["p50_ms"] <= out["p90_ms"]
    assert out["img_per_s"] == pytest.approx(4 / (out["p50_ms"] / 1e3))


def test_lcnn_bench_rejects_bad_input(capsys):
    assert main(["bench", "mobilenet_v9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lcnn bench: error: unknown model 'mobilenet_v9'") and "valid: mobilenet_v1" in err
    with pytest.raises(SystemExit) as e:
        main(["bench", "mobilenet_v2", "--impl", "cudnn"])
    assert e.value.code == 2


def test_persistent_cache_is_written_and_read(tmp_path):
    """A second process compiling the same forward pass loads it from $LCNN_CACHE_DIR."""
    env = dict(os.environ, LCNN_CACHE_DIR=str(tmp_path / "xla"))
    cmd = [sys.executable, "-m", "lcnn_jax.cli", "bench", "mobilenet_v3_small", "--resolution", "32", "--width", "0.35",
           "--batch", "4", "--steps", "1", "--cache", "--json"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    entries = sorted(p.name for p in (tmp_path / "xla").iterdir())
    assert entries, first.stderr
    # With JAX_LOG_COMPILES jax logs every persistent-cache hit as a warning.
    second = subprocess.run(cmd, env=dict(env, JAX_LOG_COMPILES="1"), capture_output=True, text=True, check=True)
    assert "Persistent compilation cache hit for 'jit__lambda'" in second.stderr, second.stderr[-2000:]
