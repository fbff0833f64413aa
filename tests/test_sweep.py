"""Sweep files (W&B format), expansion, W&B translation, the compound search, and the runner."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lcnn_jax.config import make_config
from lcnn_jax.errors import ConfigError
from lcnn_jax.sweep import search
from lcnn_jax.sweep.results import read_results
from lcnn_jax.sweep.runner import attempts, plan, run_state
from lcnn_jax.sweep.sweepfile import assignments, load_sweep, run_configs
from lcnn_jax.sweep.wandb_sweep import agent_commands, wandb_config

REPO = Path(__file__).resolve().parents[1]
# The shipped sweeps and every experiment's (smoke and full) sweep files.
SWEEPS = sorted((REPO / "sweeps").glob("*.yaml")) + sorted((REPO / "experiments").glob("*/*/*.yaml"))


def write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


VALID = """\
    name: t
    method: grid
    metric: {name: eval/ema_top1, goal: maximize}
    command:
      - ${env}
      - lcnn
      - train
      - ${args_no_hyphens}
    parameters:
      model.name: {value: mobilenet_v1}
      scaling.strategy: {values: [depth, width]}
      scaling.target: {values: [1, 2]}
      train.seed: {values: [0, 1]}
    """


@pytest.mark.parametrize("path", SWEEPS, ids=[str(p.relative_to(REPO)) for p in SWEEPS])
def test_shipped_sweep_files_pass_lcnn_and_wandb_validation(path):
    sweep = load_sweep(path)
    assert run_configs(sweep)
    schema = pytest.importorskip("sweeps.config", reason="W&B's `sweeps` package (make test installs it with --no-deps)")
    assert schema.schema_violations_from_proposed_config(wandb_config(sweep)) == []


def test_wandb_schema_rejects_a_private_section(tmp_path):
    schema = pytest.importorskip("sweeps.config", reason="W&B's `sweeps` package")
    raw = dict(load_sweep(write(tmp_path, VALID)).raw, lcnn={"workers": 2})
    assert any("lcnn" in v for v in schema.schema_violations_from_proposed_config(raw))


@pytest.mark.parametrize(
    "text,message",
    [
        (VALID.rstrip() + "\n    lcnn: {workers: 2}\n", "line 14: unknown top-level key 'lcnn'"),
        (VALID.replace("model.name", "model.nmae"), "line 10: unknown parameter 'model.nmae'"),
        (VALID.replace("{values: [1, 2]}", "{values: [1, zero]}"), "line 12: scaling.target: expected float, got 'zero'"),
        (VALID.replace("{values: [depth, width]}", "{values: [depth, diagonal]}"), "line 11: scaling.strategy: 'diagonal' is not one of"),
        (VALID.replace("{values: [1, 2]}", "{values: [1, -2]}"), "scaling.target: -2.0 is out of range"),
        (VALID.replace("{values: [1, 2]}", "{distribution: uniform, min: 1, max: 4}"), "line 12: grid search needs values"),
        (VALID.replace("method: grid", "method: hyperband"), "line 2: method must be one of grid, random, bayes"),
        (VALID.replace("eval/ema_top1", "val/acc"), "line 3: metric 'val/acc' is not logged"),
        (VALID.replace("      - ${args_no_hyphens}\n", ""), "line 4: command must be a list containing ${args_no_hyphens}"),
        (VALID.replace("{value: mobilenet_v1}", "{value: 1, values: [2]}"), "needs exactly one of value, values, or distribution"),
        ("method: grid\nparameters: [\n", "not valid YAML"),
    ],
)
def test_bad_sweep_files_name_line_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load_sweep(write(tmp_path, text))
    assert message in str(e.value)


def test_grid_and_random_expansion(tmp_path):
    sweep = load_sweep(write(tmp_path, VALID))
    rows = assignments(sweep)
    assert len(rows) == 8 and rows[0] == {"model.name": "mobilenet_v1", "scaling.strategy": "depth", "scaling.target": 1.0, "train.seed": 0}
    random = write(tmp_path, VALID.replace("method: grid", "method: random\n    run_cap: 5").replace(
        "{values: [1, 2]}", "{distribution: log_uniform_values, min: 1, max: 8}"), "r.yaml")
    a, b = assignments(load_sweep(random)), assignments(load_sweep(random))
    assert a == b and len(a) == 5 and all(1 <= r["scaling.target"] <= 8 for r in a)


def test_runs_are_deduplicated_after_canonicalisation(tmp_path):
    sweep = load_sweep(write(tmp_path, VALID))
    runs = plan(sweep, tmp_path / "out")
    # depth@1 and width@1 are the same (unscaled) model: one base run per seed.
    assert len(runs) == 6
    bases = [r for r in runs if r.config.scaling.strategy == "none"]
    assert len(bases) == 2 and {r.config.wandb.job_type for r in bases} == {"none"}
    assert {r.config.wandb.group for r in runs} == {"t"}
    assert len({r.run_id for r in runs}) == len(runs)


def test_wandb_translation_and_agent_commands(tmp_path, monkeypatch):
    import wandb

    from lcnn_jax.sweep import wandb_sweep

    sweep = load_sweep(write(tmp_path, VALID.replace("    command:\n      - ${env}\n      - lcnn\n      - train\n      - ${args_no_hyphens}\n", "")))
    captured = {}
    monkeypatch.setattr(wandb, "sweep", lambda config, project, entity: captured.update(config=config, project=project) or "abc123")
    path = wandb_sweep.create(sweep, "proj", "me")
    assert path == "me/proj/abc123" and captured["project"] == "proj"
    assert captured["config"]["command"] == ["${env}", "lcnn", "train", "${args_no_hyphens}"]
    assert captured["config"]["parameters"] == sweep.raw["parameters"] and "lcnn" not in captured["config"]
    lines = agent_commands(path, machines=2, gpus_per_machine=2)
    assert len(lines) == 4 and lines[3].endswith("CUDA_VISIBLE_DEVICES=1 wandb agent me/proj/abc123")


def test_search_constraint_handling():
    kept, rejected = search.candidates([1.0, 1.2, 1.4, 1.8], [1.0, 1.1, 1.2])
    for c in kept:
        assert c.flops_growth == pytest.approx(2.0) and min(c.alpha, c.beta, c.gamma) >= 1
    assert any("gamma would be < 1" in r[3] for r in rejected)  # 1.8 * 1.2^2 = 2.59 > 2
    kept3, rejected3 = search.candidates([1.2], [1.1], [1.0, 1.15, 1.3], tolerance=0.05)
    assert [c.gamma for c in kept3] == [1.15]  # 1.2*1.21*1.3225 = 1.92: within 5% of 2
    assert len(rejected3) == 2 and all("not within 5%" in r[3] for r in rejected3)
    assert search.candidates([0.9], [1.1])[1][0][3] == "coefficients must be >= 1"
    ranking = search.rank([(make_config(overrides=[f"scaling.alpha={a}", f"train.seed={s}"]), v)
                           for a, s, v in ((1.2, 0, 0.8), (1.2, 1, 0.82), (1.4, 0, 0.9), (1.4, 1, 0.7))])
    assert [r["alpha"] for r in ranking] == [1.2, 1.4] and ranking[0]["mean"] == pytest.approx(0.81)
    assert ranking[1]["std"] > ranking[0]["std"]
    assert search.parse_phis("1..3") == [1.0, 2.0, 3.0] and search.parse_phis("0.5,2") == [0.5, 2.0]
    with pytest.raises(ConfigError):
        search.parse_phis("a..b")


def test_report_keeps_search_candidates_phis_and_diverged_runs_apart():
    from lcnn_jax.sweep.report import aggregate, strategy_curves, table

    def run(strategy, target, phi, alpha, seed, acc, state="completed"):
        return dict(strategy=strategy, target=target, phi=phi, alpha=alpha, beta=1.1, gamma=1.15, seed=seed, state=state,
                    ema_top1=acc, macs=1e6 * (phi or target), params=1e5, realised_ratio=phi or target)

    rows = [run("compound", 1.0, 1.0, a, s, acc) for a, s, acc in ((1.2, 0, 0.80), (1.2, 1, 0.82), (1.3, 0, 0.70))]
    rows += [run("compound", 1.0, 2.0, 1.2, 0, 0.85), run("none", 1.0, None, 1.2, 0, 0.75),
             run("depth", 2.0, None, 1.2, 0, None, state="diverged")]
    groups = aggregate(rows)
    keyed = {(g["series"], g["phi"]): g for g in groups}
    # Two candidates at phi 1, and the winner's phi 2: three compound points, not one average.
    assert keyed[("compound α=1.2 β=1.1 γ=1.150", 1.0)]["mean"] == pytest.approx(0.81)
    assert keyed[("compound α=1.2 β=1.1 γ=1.150", 1.0)]["n"] == 2
    assert keyed[("compound α=1.3 β=1.1 γ=1.150", 1.0)]["mean"] == pytest.approx(0.70)
    assert keyed[("compound α=1.2 β=1.1 γ=1.150", 2.0)]["mean"] == pytest.approx(0.85)
    assert keyed[("depth", None)]["mean"] is None and keyed[("depth", None)]["diverged"] == 1
    curves = strategy_curves(groups)
    assert "depth" not in curves and all(c[0]["strategy"] == "none" for c in curves.values())
    md = table(groups, "ema_top1")
    assert "diverged (1 runs)" in md and "φ=2" in md


def test_search_steps_build_runs(tmp_path):
    text = VALID.replace("      scaling.strategy: {values: [depth, width]}\n      scaling.target: {values: [1, 2]}\n",
                         "      scaling.alpha: {values: [1.2, 1.9]}\n      scaling.beta: {values: [1.1]}\n")
    sweep = load_sweep(write(tmp_path, text))
    step1, rejected = search.step1_configs(sweep)
    assert len(step1) == 2 and len(rejected) == 1  # alpha 1.9: gamma < 1
    assert all(c.scaling.strategy == "compound" and c.scaling.phi == 1.0 for c in step1)
    best = {"alpha": 1.2, "beta": 1.1, "gamma": step1[0].scaling.gamma}
    step2 = search.step2_configs(step1, best, [1.0, 2.0, 3.0])
    assert [(c.scaling.phi, c.train.seed) for c in step2] == [(1.0, 0), (1.0, 1), (2.0, 0), (2.0, 1), (3.0, 0), (3.0, 1)]


def tiny_sweep(tmp_path, data_dir, strategies="[depth, width]", extra=""):
    return write(tmp_path, f"""\
        name: tiny
        method: grid
        metric: {{name: eval/ema_top1, goal: maximize}}
        command:
          - ${{env}}
          - lcnn
          - train
          - ${{args_no_hyphens}}
        parameters:
          model.name: {{value: mobilenet_v1}}
          model.width: {{value: 0.25}}
          model.resolution: {{value: 32}}
          model.bn_momentum: {{value: 0.5}}
          scaling.strategy: {{values: {strategies}}}
          scaling.target: {{values: [1, 2]}}
          data.data_dir: {{value: {data_dir}}}
          data.batch_size: {{value: 64}}
          data.crop_padding: {{value: 0}}
          train.epochs: {{value: 1}}
          train.progress: {{value: false}}
          wandb.enabled: {{value: false}}
          {extra}
        """)


def lcnn(*args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "lcnn_jax.cli", *args], env=env, start_new_session=True, **kw)


@pytest.mark.slow
def test_killed_runner_restarts_without_losing_or_duplicating_runs(tiny_data, tmp_path):
    root, tfds_dir = tiny_data
    env = {**os.environ, "LCNN_DATA_DIR": str(root), "WANDB_MODE": "offline"}
    path = tiny_sweep(tmp_path, tfds_dir)
    out = tmp_path / "out"
    runs = plan(load_sweep(path), out)
    assert len(runs) == 3
    proc = lcnn("sweep", "run", str(path), "--out", str(out), "--workers", "1", env=env)
    deadline = time.time() + 300
    while time.time() < deadline and not any(run_state(r.workdir) == "completed" for r in runs):
        time.sleep(0.2)
    assert proc.poll() is None, "the runner finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)  # the runner only: its job keeps running as an orphan
    proc.wait()
    states = {run_state(r.workdir) for r in runs}
    assert "completed" in states and ("pending" in states or "running" in states)
    again = lcnn("sweep", "run", str(path), "--out", str(out), "--workers", "1", "--json", env=env,
                 stdout=subprocess.PIPE, text=True)
    stdout, _ = again.communicate(timeout=600)
    assert again.returncode == 0, stdout
    assert json.loads(stdout.splitlines()[-1])["states"] == {"completed": 3}
    for r in runs:
        assert run_state(r.workdir) == "completed" and attempts(r.workdir) == 1, r.run_id
    rows = read_results(out / "results.csv")
    assert len(rows) == 3 and {r["state"] for r in rows} == {"completed"}
    assert {r["strategy"] for r in rows} == {"none", "depth", "width"}
    assert all(r["macs"] > 0 and r["ema_top1"] is not None for r in rows)
    assert (out / "report" / "report.html").exists() and (out / "report" / "top1_vs_macs.png").exists()


def test_failed_runs_are_retried_up_to_the_limit(tiny_data, tmp_path):
    # In a subprocess: submitit's local executor and pytest's in-process output capture clash.
    root, tfds_dir = tiny_data
    env = {**os.environ, "LCNN_DATA_DIR": str(root)}
    path = tiny_sweep(tmp_path, tfds_dir, strategies="[depth]", extra="data.dataset: {value: no_such_dataset}")
    out = tmp_path / "out"
    run = lcnn("sweep", "run", str(path), "--out", str(out), "--max-retries", "1", env=env, stdout=subprocess.PIPE, text=True)
    run.communicate(timeout=300)
    assert run.returncode == 1
    runs = plan(load_sweep(path), out)
    assert all(run_state(r.workdir) == "failed" and attempts(r.workdir) == 2 for r in runs)
    status = lcnn("sweep", "status", str(path), "--out", str(out), env=env, stdout=subprocess.PIPE, text=True)
    assert "2 failed" in status.communicate(timeout=120)[0]


def test_dry_run_prints_realised_multipliers(tiny_data, tmp_path, capsys):
    from lcnn_jax.cli import main

    _, tfds_dir = tiny_data
    path = tiny_sweep(tmp_path, tfds_dir, strategies="[depth, width, resolution, compound]")
    assert main(["sweep", "run", str(path), "--out", str(tmp_path / "o"), "--dry-run", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 5 and not (tmp_path / "o" / "runs").exists()
    scaled = [r for r in rows if r["strategy"] != "none"]
    # The record flags a miss exactly when the realised MACs are off the target by more than 5%.
    assert all(r["within_tolerance"] == (abs(r["realised_ratio"] / 2 - 1) <= 0.05) == (r["scaling_note"] == "")
               for r in scaled)
    res = next(r for r in rows if r["strategy"] == "resolution")
    assert res["resolution"] > 32 and res["width"] == 0.25 and res["macs"] > 0 and res["params"] > 0


@pytest.mark.slow
def test_search_runs_step1_ranks_and_scales_with_the_winner(tiny_data, tmp_path):
    root, tfds_dir = tiny_data
    env = {**os.environ, "LCNN_DATA_DIR": str(root)}
    path = tiny_sweep(tmp_path, tfds_dir, strategies="[compound]").read_text()
    path = write(tmp_path, path.replace("  scaling.strategy: {values: [compound]}\n  scaling.target: {values: [1, 2]}\n",
                                        "  scaling.alpha: {values: [1.0, 1.2, 2.5]}\n  scaling.beta: {values: [1.0]}\n"), "search.yaml")
    out = tmp_path / "out"
    proc = lcnn("sweep", "search", str(path), "--out", str(out), "--phis", "1..2", env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, stderr[-2000:]
    assert "rejected alpha=2.5" in stderr  # 2.5 * 1 > 2: gamma would be < 1
    ranking = (out / "search_ranking.md").read_text()
    assert ranking.count("\n") == 4  # header, rule, two admissible candidates
    assert "chosen: alpha=" in stdout
    rows = read_results(out / "results.csv")
    # STEP 1: 2 candidates at phi 1; STEP 2: phi 1 is the winner's own run, phi 2 is new.
    assert len(rows) == 3 and {r["state"] for r in rows} == {"completed"}
    assert sorted(r["config.scaling.phi"] for r in rows) == [1.0, 1.0, 2.0]
