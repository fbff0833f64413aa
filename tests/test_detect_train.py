"""task=detection through the shared training loop: outputs, resume, bad names, `lcnn detect`, scaling, sweep file."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_train import tiny_run

from lcnn_jax.cli import main
from lcnn_jax.config import make_config
from lcnn_jax.resolve import resolve_model
from lcnn_jax.runtime import enable_compilation_cache
from lcnn_jax.train.loop import train_and_evaluate
from lcnn_jax.train.metrics import read_jsonl

REPO = Path(__file__).resolve().parents[1]
STEPS = 8  # 64 scenes / batch 16 = 4 steps per epoch, 2 epochs


def tiny_overrides(tfds_dir, *extra):
    """A tiny SSDLite run on tiny synthetic scenes: seconds of training, most of the time is compiling."""
    return [
        "task=detection", "model.name=ssdlite_mobilenet_v2", "model.width=0.25", "model.resolution=64",
        "model.bn_momentum=0.9", f"data.data_dir={tfds_dir}", "data.batch_size=16", "data.eval_batch_size=32",
        "detect.scenes_canvas=64", "detect.scenes_train=64", "detect.scenes_test=32", "train.epochs=2",
        "train.log_every_steps=4", "train.checkpoint_every_steps=4", "train.progress=false", "optim.name=adamw",
        "optim.lr=0.002", "optim.warmup_epochs=0.5", "wandb.enabled=false", *extra,
    ]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_data):
    """One completed tiny detection run shared by the tests below (compiles once into a shared cache)."""
    enable_compilation_cache(str(tmp_path_factory.mktemp("jax_cache")))
    workdir = tmp_path_factory.mktemp("det") / "w"
    summary, _ = tiny_run(workdir, tiny_data, overrides=tiny_overrides)
    return workdir, summary, tiny_data[1]


@pytest.mark.slow  # the shared tiny run compiles an SSD: ~1-2 min on 2 busy cores
def test_run_writes_config_metrics_summary_and_checkpoints_with_map(finished_run):
    workdir, summary, _ = finished_run
    assert summary["status"] == "completed" and summary["final_step"] == STEPS
    on_disk = json.loads((workdir / "summary.json").read_text())
    assert on_disk["task"] == "detection" and on_disk["model"] == "ssdlite_mobilenet_v2"
    for key in ("map", "map50", "ema_map", "ema_map50", "loss", "macs", "params", "train_img_per_s", "compile_s",
                "wall_s", "eval_latency_ms"):
        assert on_disk[key] is not None, key
    for key in ("map", "map50", "ema_map", "ema_map50", "loss"):
        assert math.isfinite(on_disk[key]) and (key == "loss" or 0 <= on_disk[key] <= 1), key
    records = read_jsonl(workdir / "metrics.jsonl")
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in train] == [4, 8] and {"loc", "cls", "grad_norm"} <= set(train[0])
    assert [r["step"] for r in evals] == [4, 8] and evals[-1]["ema_map50"] == pytest.approx(on_disk["ema_map50"])
    assert json.loads((workdir / "config.json").read_text())["task"] == "detection"
    assert sorted(int(p.name) for p in (workdir / "ckpt").iterdir() if p.name.isdigit())[-1] == STEPS


@pytest.mark.slow  # the shared tiny run compiles an SSD: ~1-2 min on 2 busy cores
def test_resume_from_an_older_checkpoint_reproduces_the_summary(finished_run, tiny_data, tmp_path, monkeypatch):
    workdir, summary, tfds_dir = finished_run
    monkeypatch.setenv("LCNN_DATA_DIR", str(tiny_data[0]))
    resumed = tmp_path / "w"
    shutil.copytree(workdir, resumed)
    steps = sorted(int(p.name) for p in (resumed / "ckpt").iterdir() if p.name.isdigit())
    for step in steps[steps.index(4) + 1:]:  # keep step 4 only
        shutil.rmtree(resumed / "ckpt" / str(step))
    again = train_and_evaluate(make_config(overrides=tiny_overrides(tfds_dir)), resumed)
    for key in ("map", "map50", "ema_map", "ema_map50", "loss"):
        assert again[key] == pytest.approx(summary[key], rel=1e-4, abs=1e-6), key
    assert [r["step"] for r in read_jsonl(resumed / "metrics.jsonl") if r["split"] == "eval"] == [4, 8]


@pytest.mark.parametrize("overrides,message", [
    (["task=detection", "model.name=mobilenet_v2"], "is a classifier; task=detection needs a detector: ssd_mobilenet_v1"),
    (["task=detection", "model.name=ssdlite_mobilenet_v9"], "unknown detector 'ssdlite_mobilenet_v9'; did you mean"),
    (["model.name=yolov8n"], "is a detector: set task=detection"),
    (["task=detection", "model.name=yolov8n", "model.resolution=100"], "multiple of 32"),
    (["task=detection", "model.name=ssdlite_mobilenet_v2", "compress.sparsity=0.5"], "not supported with task=detection"),
])
def test_bad_detector_input_exits_2_and_writes_nothing(tiny_env, tmp_path, capsys, overrides, message):
    workdir = tmp_path / "w"
    argv = ["train", "--workdir", str(workdir), f"data.data_dir={tmp_path / 'tfds'}", *overrides]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0]
    assert not workdir.exists()


@pytest.mark.slow  # the shared tiny run compiles an SSD: ~1-2 min on 2 busy cores
def test_lcnn_detect_draws_boxes_into_a_png(finished_run, tiny_data, tmp_path, monkeypatch, capsys):
    from PIL import Image

    workdir, _, _ = finished_run
    monkeypatch.setenv("LCNN_DATA_DIR", str(tiny_data[0]))
    image = tmp_path / "scene.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(image)  # RGB, not square
    out = tmp_path / "boxes.png"
    assert main(["detect", str(workdir), str(image), str(out), "--score", "0.0"]) == 0
    assert json.loads(capsys.readouterr().out)["detections"] > 0  # score 0: every kept detection is drawn
    with Image.open(out) as drawn:
        assert drawn.format == "PNG" and drawn.size[0] > 0
    assert main(["detect", str(workdir), str(tmp_path / "missing.png"), str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.slow  # the shared tiny run compiles an SSD: ~1-2 min on 2 busy cores
def test_lcnn_detect_and_eval_reject_other_workdirs(finished_run, tiny_data, tmp_path, monkeypatch, capsys):
    workdir, summary, _ = finished_run
    classification = tmp_path / "cls"
    classification.mkdir()
    (classification / "config.json").write_text(json.dumps({"model": {"name": "mobilenet_v2"}}))
    assert main(["detect", str(classification), "x.png", str(tmp_path / "o.png")]) == 2
    assert "is a classification run; lcnn detect needs a task=detection run" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()
    monkeypatch.setenv("LCNN_DATA_DIR", str(tiny_data[0]))
    assert main(["eval", str(workdir)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["step"] == STEPS and evaluated["ema_map50"] == pytest.approx(summary["ema_map50"], abs=1e-6)


# YOLO resolutions move in steps of 32: from 224, 2x MACs is 320 px (2.04x); from 128 no step lands within 5%.
@pytest.mark.parametrize("model,strategy,res", [("ssdlite_mobilenet_v2", "width", 128), ("yolov8n", "resolution", 224)])
def test_detector_scaled_to_twice_the_macs_lands_within_tolerance(model, strategy, res):
    base_cfg = ["task=detection", f"model.name={model}", "model.width=0.5", f"model.resolution={res}"]
    config = make_config(overrides=[*base_cfg, f"scaling.strategy={strategy}", "scaling.target=2"])
    spec, record = resolve_model(config, 10)
    assert record["within_tolerance"] and abs(record["realised_ratio"] - 2) <= 0.05 * 2
    base, _ = resolve_model(make_config(overrides=base_cfg), 10)
    assert record["base_macs"] < record["realised_macs"] and type(spec) is type(base)
    if strategy == "resolution":
        assert spec.resolution % 32 == 0 and spec.width == base.width  # YOLO resolutions stay multiples of 32
    else:
        assert spec.width > 0.5 and spec.resolution == res


def test_detection_sweep_file_validates():
    from lcnn_jax.sweep.sweepfile import load_sweep, run_configs
    from lcnn_jax.sweep.wandb_sweep import wandb_config

    sweep = load_sweep(REPO / "sweeps" / "detection_scaling.yaml")
    configs = run_configs(sweep)
    assert sweep.metric == "eval/ema_map50" and all(c.task == "detection" for c in configs)
    assert {c.scaling.strategy for c in configs} == {"none", "width", "depth", "resolution", "compound"}
    schema = pytest.importorskip("sweeps.config", reason="W&B's `sweeps` package (make test installs it with --no-deps)")
    assert schema.schema_violations_from_proposed_config(wandb_config(sweep)) == []


@pytest.mark.parametrize("path", sorted((REPO / "experiments" / "detection").glob("*.yaml")), ids=lambda p: p.stem)
def test_detection_recipes_load_and_name_a_detector(path):
    from lcnn_jax.config import load_config

    config = load_config(path)
    resolve_model(config, 10)  # the recipe builds: a detector at that width and resolution
    assert config.task == "detection" and config.model.name == path.stem  # each recipe is named after its model
    assert "Expected" in path.read_text().split("task:")[0]  # the header records the measured result
