"""train_and_evaluate end to end: outputs, bad input, divergence, kill-and-resume, wandb, sharding."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import N_TRAIN

from lcnn_jax.cli import main
from lcnn_jax.config import make_config
from lcnn_jax.train.loop import train_and_evaluate
from lcnn_jax.train.metrics import read_jsonl

RUNNER = Path(__file__).with_name("train_runner.py")
STEPS = 3 * (N_TRAIN // 64)  # the steps of a `tiny_overrides` run: train.epochs=3, data.batch_size=64


def tiny_overrides(data_dir, *extra):
    """A seconds-long run on the tiny dataset: MobileNetV1 x0.25 at 32 px, 24 steps of 64 images."""
    return [
        "model.name=mobilenet_v1", "model.width=0.25", "model.resolution=32", "model.bn_momentum=0.5",
        f"data.data_dir={data_dir}", "data.batch_size=64", "data.eval_batch_size=100", "data.crop_padding=0",
        "data.flip=false", "train.epochs=3", "train.log_every_steps=4", "train.eval_every_epochs=1.5",
        "train.checkpoint_every_steps=4", "train.progress=false", "optim.lr=0.1", "optim.warmup_epochs=0.5", *extra,
    ]


def tiny_run(workdir, tiny_data, *extra, overrides=tiny_overrides):
    """Train an `overrides(tfds_dir, *extra)` run on the tiny dataset; returns (summary, config)."""
    root, tfds_dir = tiny_data
    config = make_config(overrides=overrides(tfds_dir, *extra))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LCNN_DATA_DIR", str(root))
        return train_and_evaluate(config, workdir), config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_data):
    """One completed tiny run shared by several tests."""
    workdir = tmp_path_factory.mktemp("run") / "w"
    summary, _ = tiny_run(workdir, tiny_data)
    return workdir, summary


def test_run_writes_config_metrics_summary_and_checkpoints(finished_run):
    workdir, summary = finished_run
    assert summary["status"] == "completed" and summary["final_step"] == STEPS
    on_disk = json.loads((workdir / "summary.json").read_text())
    assert on_disk["status"] == "completed"
    for key in ("top1", "top5", "loss", "ema_top1", "ema_top5", "ema_loss", "macs", "params", "train_img_per_s",
                "compile_s", "wall_s", "eval_latency_ms"):
        assert on_disk[key] is not None, key
    assert on_disk["top1"] > 0.5  # the tiny dataset is easy; chance is 0.1
    records = read_jsonl(workdir / "metrics.jsonl")
    train = [r for r in records if r["split"] == "train"]
    evals = [r for r in records if r["split"] == "eval"]
    assert [r["step"] for r in train] == list(range(4, STEPS + 1, 4)) and [r["step"] for r in evals] == [STEPS // 2, STEPS]
    assert evals[-1]["top1"] == pytest.approx(on_disk["top1"])
    assert json.loads((workdir / "config.json").read_text())["model"]["name"] == "mobilenet_v1"
    assert sorted(int(p.name) for p in (workdir / "ckpt").iterdir() if p.name.isdigit()) == [STEPS - 4, STEPS]


def test_eval_command_matches_the_summary(finished_run, tiny_env, capsys):
    workdir, summary = finished_run
    assert main(["eval", str(workdir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["step"] == STEPS
    assert out["top1"] == pytest.approx(summary["top1"]) and out["ema_top1"] == pytest.approx(summary["ema_top1"])


def _wandb_history(workdir: Path) -> list[dict]:
    """History rows of the offline run, read from its .wandb log with wandb's own reader."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal import datastore

    path = sorted((workdir / "wandb").glob("offline-run-*/run-*.wandb"))[0]  # the first run of this workdir
    store = datastore.DataStore()
    store.open_for_scan(str(path))
    rows = []
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item})
    return rows


def test_wandb_offline_run_mirrors_metrics_jsonl(finished_run):
    workdir, _ = finished_run
    rows = _wandb_history(workdir)
    train_rows = [r for r in rows if "train/loss" in r]
    records = [r for r in read_jsonl(workdir / "metrics.jsonl") if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [r["step"] for r in records]
    assert [r["train/loss"] for r in train_rows] == pytest.approx([r["loss"] for r in records])
    evals = [r for r in read_jsonl(workdir / "metrics.jsonl") if r["split"] == "eval"]
    eval_rows = [r for r in rows if "eval/ema_top1" in r]
    assert [(r["step"], r["eval/ema_top1"]) for r in eval_rows] == [(r["step"], pytest.approx(r["ema_top1"])) for r in evals]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model.widht=0.5"], "unknown config key 'model.widht'"),
        (["optim.lr=0"], "optim.lr: 0.0 is out of range"),
        (["model.name=resnet50"], "unknown model 'resnet50'"),
        (["data.dataset=no_such_dataset"], "unknown TFDS dataset"),
        (["data.batch_size=100000"], f"exceeds the {N_TRAIN} training examples"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tiny_env, tmp_path, capsys, overrides, message):
    workdir = tmp_path / "w"
    argv = ["train", "--workdir", str(workdir), *tiny_overrides(tiny_env), *overrides]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not workdir.exists()


def test_missing_dataset_explains_how_to_get_it(tmp_path, monkeypatch, capsys):
    from lcnn_jax.data import fashion_mnist

    monkeypatch.setenv("LCNN_DATA_DIR", str(tmp_path / "nothing"))
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(fashion_mnist, "URL", "http://127.0.0.1:9/")  # refused at once, never the internet
    workdir = tmp_path / "w"
    assert main(["train", "--workdir", str(workdir), f"data.data_dir={tmp_path / 'tfds'}"]) == 2
    assert "sudo apt-get install dataset-fashion-mnist" in capsys.readouterr().err
    assert not workdir.exists()


def test_divergence_stops_with_status_and_step(tiny_env, tmp_path, capsys):
    workdir = tmp_path / "w"
    code = main(["train", "--workdir", str(workdir), *tiny_overrides(tiny_env, "optim.lr=1e30", "optim.warmup_epochs=0")])
    assert code == 1
    assert "diverged" in capsys.readouterr().err
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "diverged" and 0 <= summary["diverged_step"] < 4
    assert "NaN/inf" in summary["error"]


def test_rerunning_a_finished_run_trains_nothing_and_reports_the_same(finished_run, tiny_env):
    workdir, summary = finished_run
    before = (workdir / "metrics.jsonl").read_text()
    again = train_and_evaluate(make_config(overrides=tiny_overrides(tiny_env)), workdir)
    assert again["status"] == "completed" and again["final_step"] == summary["final_step"]
    assert again["top1"] == pytest.approx(summary["top1"]) and again["ema_top1"] == pytest.approx(summary["ema_top1"])
    assert (workdir / "metrics.jsonl").read_text() == before


def test_a_different_config_refuses_an_existing_workdir(finished_run, capsys):
    workdir, _ = finished_run
    assert main(["train", "--workdir", str(workdir), "model.name=mobilenet_v2"]) == 2
    assert "holds a run with a different config" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_and_resume_matches_an_uninterrupted_run(tiny_data, tmp_path):
    root, tfds_dir = tiny_data
    env = {**os.environ, "LCNN_DATA_DIR": str(root), "WANDB_MODE": "offline"}
    overrides = tiny_overrides(tfds_dir, "wandb.enabled=false")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([sys.executable, str(RUNNER), "train", str(straight), *overrides], env=env, check=True)
    proc = subprocess.Popen([sys.executable, str(RUNNER), "train", str(killed), *overrides], env=env)
    deadline = time.time() + 300
    while not (killed / "ckpt" / "12").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "summary.json").exists()
    subprocess.run([sys.executable, str(RUNNER), "train", str(killed), *overrides], env=env, check=True)
    a = json.loads((straight / "summary.json").read_text())
    b = json.loads((killed / "summary.json").read_text())
    for key in ("top1", "top5", "loss", "ema_top1", "ema_loss", "final_step"):
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), key
    ra = [r for r in read_jsonl(straight / "metrics.jsonl")]
    rb = [r for r in read_jsonl(killed / "metrics.jsonl")]
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    assert [r.get("loss") for r in ra] == pytest.approx([r.get("loss") for r in rb], rel=1e-6)


def test_eight_fake_devices_train_like_one(tmp_path):
    results = {}
    for n in (1, 8):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}", "JAX_PLATFORMS": "cpu"}
        out = tmp_path / f"{n}.json"
        subprocess.run([sys.executable, str(RUNNER), "steps", str(out)], env=env, check=True)
        results[n] = json.loads(out.read_text())
    assert results[1]["devices"] == 1 and results[8]["devices"] == 8
    np.testing.assert_allclose(results[1]["losses"], results[8]["losses"], rtol=1e-5)
    np.testing.assert_allclose(results[1]["param_sums"], results[8]["param_sums"], rtol=1e-4, atol=1e-6)


def test_fine_tune_from_a_converted_checkpoint(tiny_env, tmp_path):
    from lcnn_jax.interop.pretrained import save_pretrained, spec_record
    from lcnn_jax.net import Net, init_variables
    from lcnn_jax.presets import get_spec

    spec = get_spec("mobilenet_v1", width=0.25, resolution=32, num_classes=1000)
    variables = init_variables(Net(spec), 32, seed=123)
    save_pretrained(tmp_path / "pre", spec_record(spec, "mobilenet_v1", "symmetric", framework="test"), variables)
    config = make_config(overrides=tiny_overrides(tiny_env, f"model.init_from={tmp_path / 'pre'}", "train.epochs=0.125",
                                                  "wandb.enabled=false", "optim.lr=1e-9", "optim.warmup_epochs=0"))
    summary = train_and_evaluate(config, tmp_path / "w")
    assert summary["num_classes"] == 10 and summary["status"] == "completed"
    from lcnn_jax.train.checkpoints import Checkpoints

    ckpt = Checkpoints(tmp_path / "w" / "ckpt", 4, 2)
    restored = ckpt.manager.restore(ckpt.latest_step())
    ckpt.close()
    stem = np.asarray(restored["params"]["stem"]["conv"]["kernel"])
    np.testing.assert_allclose(stem, np.asarray(variables["params"]["stem"]["conv"]["kernel"]), atol=1e-6)
    assert restored["params"]["classifier"]["kernel"].shape == (256, 10)
