"""`lcnn models` and `lcnn count`: output formats and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lcnn_jax.cli import main
from lcnn_jax.presets import list_presets


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse exits on usage errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_models_lists_every_preset(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    for name in list_presets():
        assert name in out
    code, out, _ = run(capsys, "models", "--json")
    assert [m["name"] for m in json.loads(out)] == list_presets()


def test_count_json_has_integer_totals(capsys):
    code, out, _ = run(capsys, "count", "mobilenet_v1", "--width", "0.75", "--resolution", "160", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["model"] == "mobilenet_v1" and d["resolution"] == 160 and d["width"] == 0.75 and d["depth"] == 1.0
    for key in ("macs", "flops", "params", "activations"):
        assert isinstance(d[key], int)
    assert d["flops"] == 2 * d["macs"]
    assert d["params"] == 2_585_560


def test_count_per_layer_table_and_json(capsys):
    code, out, _ = run(capsys, "count", "mobilenet_v2", "--num-classes", "10", "--per-layer")
    assert code == 0
    assert "stage0_block0/dw/conv" in out and "depthwise_conv" in out and "FLOP/B" in out
    code, out, _ = run(capsys, "count", "mobilenet_v2", "--per-layer", "--json")
    layers = json.loads(out)["layers"]
    assert layers[0]["name"] == "stem/conv" and sum(layer["macs"] for layer in layers) == 300_774_272


def test_count_all_pairs_presets_with_published_figures(capsys):
    code, out, err = run(capsys, "count", "--all", "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["model"] for r in rows] == list_presets()
    b0 = rows[list_presets().index("efficientnet_b0")]
    assert b0["MACs (M)"] == "385.81" and b0["ratio"] == "1.000"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["count", "mobilenet_v22"], "unknown model 'mobilenet_v22'; did you mean mobilenet_v2"),
        (["count", "mobilenet_v1", "--width", "0"], "argument --width: must be a number > 0, got '0'"),
        (["count", "mobilenet_v1", "--width", "-0.5"], "argument --width: must be a number > 0"),
        (["count", "mobilenet_v1", "--depth", "abc"], "argument --depth: must be a number > 0, got 'abc'"),
        (["count", "mobilenet_v1", "--width", "nan"], "argument --width: must be a number > 0"),
        (["count", "mobilenet_v1", "--resolution", "16"], "resolution must be an integer >= 32"),
        (["count", "mobilenet_v1", "--resolution", "1.5"], "argument --resolution: must be an integer >= 1"),
        (["count", "mobilenet_v1", "--num-classes", "0"], "argument --num-classes: must be an integer >= 1"),
        (["count"], "give one MODEL or --all"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_console_script_is_installed_and_fails_cleanly():
    exe = Path(sys.executable).with_name("lcnn")
    ok = subprocess.run([str(exe), "count", "efficientnet_b0", "--json"], capture_output=True, text=True, check=True)
    assert json.loads(ok.stdout)["macs"] == 385_814_752
    bad = subprocess.run([str(exe), "count", "resnet50"], capture_output=True, text=True, env={**os.environ})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
