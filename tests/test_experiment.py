"""Experiments: discovery, plans with device-hours, analyses on every experiment, one real run."""

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lcnn_jax.cli import main
from lcnn_jax.experiment.plan import experiment_runs
from lcnn_jax.experiment.registry import list_experiments
from lcnn_jax.experiment.run import ExperimentResult, describe

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = {e.name: e for e in list_experiments()}
ABLATIONS = ("mobilenet_v1_width_resolution", "mobilenet_v1_separable_vs_conv", "mobilenet_v1_narrow_vs_shallow",
             "efficientnet_b0_b7_counts", "efficientnet_single_dimension", "efficientnet_width_at_depth_resolution",
             "mobilenets_scaled", "efficientnet_b0_scaled", "fast_compound")


def test_every_ablation_of_the_issue_is_an_experiment_with_readme_and_both_sizes(capsys):
    assert set(ABLATIONS) <= set(EXPERIMENTS)
    for e in EXPERIMENTS.values():
        assert (e.folder / "README.md").is_file(), e.name
        assert e.sweep_files("smoke") and e.sweep_files("full")
        assert e.smoke_minutes <= 30
    assert main(["experiment", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ABLATIONS)


def test_unknown_experiment_and_size_fail_with_the_valid_choices(capsys):
    assert main(["experiment", "run", "mobilenet_v9"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'mobilenet_v9'" in err and "mobilenet_v1_width_resolution" in err
    with pytest.raises(SystemExit) as e:
        main(["experiment", "run", "fast_compound", "--size", "huge"])
    assert e.value.code == 2


def test_full_dry_run_prints_runs_macs_and_device_hours(capsys, tmp_path):
    code = main(["experiment", "run", "mobilenet_v1_separable_vs_conv", "--size", "full", "--dry-run", "--json",
                 "--workdir", str(tmp_path)])
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    macs = {r["model"]: r["macs"] for r in plan["rows"]}
    # Table 4 at ImageNet's 1000 classes: the exact reference count and the paper's 4866M.
    assert macs["mobilenet_v1"] == 568_740_352 and abs(macs["mobilenet_v1_conv"] / 4866e6 - 1) < 0.01
    assert plan["runs"] == 2
    # 3 x forward per train image (150 epochs of 1.28M) plus eval, at 50 TFLOP/s.
    flops = sum(2 * m * (3 * 1_281_167 * 150 + 50_000 * 150) for m in macs.values())
    assert plan["device_hours"] == pytest.approx(flops / 50e12 / 3600)
    assert not any(tmp_path.iterdir())  # a plan trains and writes nothing


def fake_results(name: str, tmp_path: Path) -> ExperimentResult:
    """Smoke-plan rows with made-up accuracies (two seeds where the plan has one), as the runner would give."""
    e = EXPERIMENTS[name]
    rows = describe(experiment_runs(e, "smoke", tmp_path / "wd"))
    rng = random.Random(0)
    out = []
    for r in rows:
        for seed in {r["seed"], 1}:
            acc = 0.5 + 0.1 * rng.random()
            out.append(dict(r, seed=seed, state="completed", ema_top1=acc, top1=acc))
    out.append(dict(rows[-1], seed=2, state="diverged", ema_top1=None, top1=None))  # tables must cope with one
    (tmp_path / "out").mkdir()
    return ExperimentResult("smoke", out, tmp_path / "out")


def paper_figures(module) -> set[str]:
    """Every number and sentence in the module's PAPER* constants, as they would be printed."""
    found = set()

    def walk(x):
        if isinstance(x, dict):
            [walk(v) for v in x.values()]
        elif isinstance(x, (tuple, list)):
            [walk(v) for v in x]
        elif isinstance(x, float) and 10 < x < 100:  # a top-1 percentage
            found.add(f"{x:g}")
        elif isinstance(x, str) and len(x) > 20:
            found.add(x)

    for name in dir(module):
        if name.startswith("PAPER"):
            walk(getattr(module, name))
    return found


@pytest.mark.parametrize("name", [n for n in ABLATIONS if EXPERIMENTS[n].kind == "train"])
def test_every_training_analysis_writes_its_table_and_plot(name, tmp_path):
    result = fake_results(name, tmp_path)
    analysis = EXPERIMENTS[name].analysis()
    analysis.analyze(result)
    table = (result.out / "table.md").read_text()
    assert table.startswith("# ") and "| ---" in table
    assert list(result.out.glob("*.png"))
    figures = paper_figures(analysis)
    assert figures and any(f in table for f in figures), figures  # the paper's own numbers sit next to ours


def test_mobilenet_v1_counts_table_is_paper_vs_ours():
    table = EXPERIMENTS["mobilenet_v1_width_resolution"].analysis().counts_table()
    # width 1 at 224: the paper's 569M Mult-Adds and 4.2M params, ratio 1.000.
    assert "| 1 | 224 | 569M | 568.7M | 1.000 | 4.2M | 4.23M | 1.000 | 70.6 |" in table
    assert "| 0.75 | 224 | 325M | 325.4M | 1.001 |" in table


def test_shallow_mobilenet_matches_table5_counts():
    from lcnn_jax.experiment.kit import count_preset

    c = count_preset("mobilenet_v1_shallow")
    assert abs(c.macs / 307e6 - 1) < 0.005 and abs(c.params / 2.9e6 - 1) < 0.01


def test_fast_compound_theory_exponents():
    a = EXPERIMENTS["fast_compound"].analysis()
    assert a.theoretical_exponent(0.1, 0.8, 0.1) == pytest.approx(0.6)
    assert a.theoretical_exponent(*a.compound_shares()) == pytest.approx(0.854, abs=0.002)
    assert a.fit([1, 2, 4], [3, 6, 12]) == pytest.approx(1.0)


def test_count_experiment_runs_in_seconds_and_writes_results(tmp_path, capsys):
    code = main(["experiment", "run", "efficientnet_b0_b7_counts", "--results", str(tmp_path / "res"),
                 "--workdir", str(tmp_path / "wd")])
    assert code == 0
    out = tmp_path / "res" / "efficientnet_b0_b7_counts" / "smoke"
    table = (out / "table.md").read_text()
    assert "| B0 | 224 | 5.3M | 5.29M | 0.998 |" in table
    assert (out / "paper_vs_ours.png").stat().st_size > 1000
    assert (out / "command.txt").read_text().startswith("lcnn experiment run efficientnet_b0_b7_counts --size smoke")


def test_counts_only_gives_the_paper_tables_of_a_training_experiment_without_training(tmp_path, capsys):
    code = main(["experiment", "run", "mobilenet_v1_width_resolution", "--counts-only", "--results", str(tmp_path / "res"),
                 "--workdir", str(tmp_path / "wd")])
    assert code == 0
    table = (tmp_path / "res" / "mobilenet_v1_width_resolution" / "smoke-counts" / "table.md").read_text()
    assert "| 0.5 | 224 | 149M | 149.5M | 1.003 |" in table
    assert not (tmp_path / "wd").exists()  # nothing trained, no run directories


@pytest.mark.slow
def test_a_training_experiment_runs_end_to_end_and_reuses_its_runs(tiny_data, tmp_path):
    root, tfds_dir = tiny_data
    exp = tmp_path / "experiments" / "tiny_table4"
    (exp / "smoke").mkdir(parents=True)
    shutil.copy(REPO / "experiments" / "mobilenet_v1_separable_vs_conv" / "analysis.py", exp / "analysis.py")
    (exp / "README.md").write_text("tiny\n")
    (exp / "smoke" / "models.yaml").write_text(textwrap.dedent(f"""\
        name: tiny_table4
        method: grid
        metric: {{name: eval/ema_top1, goal: maximize}}
        command: [lcnn, train, "${{args_no_hyphens}}"]
        parameters:
          model.name: {{values: [mobilenet_v1, mobilenet_v1_conv]}}
          model.width: {{value: 0.25}}
          model.resolution: {{value: 32}}
          data.data_dir: {{value: {tfds_dir}}}
          data.batch_size: {{value: 64}}
          train.epochs: {{value: 1}}
          train.progress: {{value: false}}
          wandb.enabled: {{value: false}}
        """))
    env = {**os.environ, "LCNN_DATA_DIR": str(root)}
    cmd = [sys.executable, "-m", "lcnn_jax.cli", "experiment", "run", "tiny_table4", "--root", str(exp.parent),
           "--workdir", str(tmp_path / "wd"), "--workers", "1"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = exp.parent / "results" / "tiny_table4" / "smoke"
    table = (out / "table.md").read_text()
    assert "| Conv MobileNet | 71.7 |" in table and "Full convolution minus separable" in table
    assert (out / "top1_vs_macs.png").exists() and (out / "command.txt").exists()
    runs = sorted((tmp_path / "wd" / "runs").iterdir())
    assert len(runs) == 2 and all((r / "summary.json").exists() for r in runs)
    # A rerun trains nothing: both runs are complete, so only the analysis runs again.
    mtimes = [(r / "summary.json").stat().st_mtime for r in runs]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [(r / "summary.json").stat().st_mtime for r in runs] == mtimes


def test_compress_vs_scale_lines_up_the_methods_at_matched_bytes(tmp_path):
    from lcnn_jax.config import flatten

    result = fake_results("compress_vs_scale", tmp_path)
    for r in result.rows:  # what a run's summary adds for compression, as the loop computes it
        r.update(flatten(r["config"], "config."))
        sparsity, bits = r["config.compress.sparsity"], r["config.compress.bits"]
        kernel_bytes = r["params"] * bits / 8
        r.update(model_bytes=kernel_bytes * (1 - sparsity) + (r["params"] / 8 if sparsity else 0),
                 effective_macs=r["macs"] * (1 - 0.8 * sparsity), ptq_model_bytes=r["params"] * (1 - sparsity),
                 ptq_top1=r["ema_top1"] and r["ema_top1"] - 0.004, ptq_agreement=0.985)
    EXPERIMENTS["compress_vs_scale"].analysis().analyze(result)
    table = (result.out / "table.md").read_text()
    for label in ("75% sparse", "W8A8 QAT", "W4A8 QAT", "int8 PTQ of the base", "75% sparse + int8 PTQ", "Matched bytes"):
        assert label in table, label
    # at a quarter of the base's bytes: int8 (exactly 1/4 here), width 1/4 and 75% pruning are compared
    quarter = [line for line in table.splitlines() if line.startswith("| 0.25x")]
    assert {"int8 PTQ", "quantize", "prune"} <= {line.split("|")[2].strip() for line in quarter}
    assert {p.name for p in result.out.glob("*.png")} == {"top1_vs_bytes.png", "top1_vs_macs.png"}
