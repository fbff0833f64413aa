"""Pruning and quantization inside train_and_evaluate: config errors, sparsity reached, resume, PTQ."""

import json
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from test_train import STEPS, tiny_overrides, tiny_run

from lcnn_jax.cli import main
from lcnn_jax.compress.pruning import PruneConfig, sparsity_report
from lcnn_jax.train.loop import train_and_evaluate

# A pruned, 8-bit QAT run that also int8-quantizes its EMA weights after training. Checkpoints
# every 4 of its 24 steps are all kept, so a resume can start inside the sparsity ramp (steps 2-18).
COMPRESS = ("compress.sparsity=0.5", "compress.bits=8", "compress.ptq_int8=true", "compress.calibration_batches=2",
            "compress.prune_every=2", "train.keep_checkpoints=10", "wandb.enabled=false")


def _params(workdir, step: int) -> dict:
    """The raw params and EMA params of checkpoint `step`, as numpy (no restore target needed)."""
    tree = ocp.StandardCheckpointer().restore((workdir / "ckpt" / str(step) / "default").absolute())
    return {"params": tree["params"], "ema": tree["ema_params"]}


def _zeros(tree) -> list[np.ndarray]:
    return [np.asarray(k) == 0 for k in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory, tiny_data):
    """One compressed tiny run shared by the tests below."""
    workdir = tmp_path_factory.mktemp("pruned") / "w"
    summary, config = tiny_run(workdir, tiny_data, *COMPRESS)
    return workdir, summary, config


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["compress.sparsity=1"], "compress.sparsity: 1.0 is out of range [0, 1)"),
        (["compress.sparsity=-0.5"], "compress.sparsity: -0.5 is out of range [0, 1)"),
        (["compress.bits=16"], "compress.bits: 16 is not one of 32, 8, 4"),
        (["compress.bits=eight"], "compress.bits: expected int, got 'eight'"),
        (["compress.sparsity=0.5", "compress.prune_start=0.8", "compress.prune_end=0.5"],
         "compress.prune_start (0.8) must not be after compress.prune_end (0.5)"),
        (["compress.sparsty=0.5"], "unknown config key 'compress.sparsty'"),
    ],
)
def test_invalid_compress_config_exits_2_and_writes_nothing(tiny_env, tmp_path, capsys, overrides, message):
    workdir = tmp_path / "w"
    assert main(["train", "--workdir", str(workdir), *tiny_overrides(tiny_env), *overrides]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not workdir.exists()


def test_sparsity_is_reached_per_layer_and_globally(pruned_run):
    workdir, summary, _ = pruned_run
    assert summary["status"] == "completed" and summary["sparsity_target"] == 0.5
    final = _params(workdir, STEPS)
    report = sparsity_report(final["params"], PruneConfig(sparsity=0.5))
    assert report["layers"] and report["global"] == pytest.approx(0.5, abs=0.01)
    for name, sparsity in report["layers"].items():  # uniform: every prunable kernel, not just the total
        assert sparsity == pytest.approx(0.5, abs=0.01), name
    assert summary["sparsity"] == pytest.approx(report["global"])
    # the EMA weights (what ema_top1 and PTQ use) are exactly as sparse as the weights
    assert sparsity_report(final["ema"], PruneConfig(sparsity=0.5))["global"] == pytest.approx(report["global"])


def test_effective_counts_and_bytes_shrink(pruned_run):
    _, s, _ = pruned_run
    assert s["bits"] == 8
    assert s["params"] * 0.5 < s["effective_params"] < s["params"] * 0.75  # half the big kernels; BN, dw stay
    assert s["macs"] * 0.4 < s["effective_macs"] < s["macs"]
    # 8-bit non-zero values plus a 1-bit map per weight: well under a quarter of the float bytes
    assert s["model_bytes"] < s["float_model_bytes"] / 4


def test_ptq_reports_int8_accuracy_and_agreement(pruned_run):
    _, s, _ = pruned_run
    assert 0.0 <= s["ptq_top1"] <= 1.0 and s["ptq_agreement"] >= 0.9
    assert s["ptq_float_top1"] == pytest.approx(s["ema_top1"], abs=0.05)  # float vs fake-quant eval of one net
    assert s["ptq_model_bytes"] < s["float_model_bytes"] / 3


def test_pruned_weights_stay_zero_through_checkpoint_and_resume(pruned_run, tiny_data, tmp_path):
    """An interrupted run resumed from a checkpoint inside the ramp ends exactly as the straight run."""
    workdir, summary, config = pruned_run
    resumed = tmp_path / "resumed"
    shutil.copytree(workdir, resumed)
    # Interrupted after step 12, mid-ramp: later checkpoints and the summary never got written.
    for step in range(16, STEPS + 1, 4):
        shutil.rmtree(resumed / "ckpt" / str(step))
    (resumed / "summary.json").unlink()
    mid = _params(resumed, 12)
    assert 0.05 < np.mean(np.concatenate([z.ravel() for z in _zeros(mid["params"])])) < 0.5
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LCNN_DATA_DIR", str(tiny_data[0]))
        again = train_and_evaluate(config, resumed)
    for key in ("top1", "ema_top1", "sparsity", "effective_params", "model_bytes", "ptq_top1"):
        assert again[key] == pytest.approx(summary[key], rel=1e-6), key
    end = _params(resumed, STEPS)
    for was_zero, is_zero in zip(_zeros(mid["params"]), _zeros(end["params"])):
        assert not (was_zero & ~is_zero).any()  # masks only shrink: a pruned weight never comes back
    for a, b in zip(jax.tree.leaves(end["params"]), jax.tree.leaves(_params(workdir, STEPS)["params"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_eval_command_restores_a_pruned_run(pruned_run, tiny_env, capsys):
    workdir, summary, _ = pruned_run
    assert main(["eval", str(workdir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["top1"] == pytest.approx(summary["top1"]) and out["ema_top1"] == pytest.approx(summary["ema_top1"])
