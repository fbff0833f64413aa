"""`train_and_evaluate(config, workdir)`: the engine behind `lcnn train` and every sweep run.

Workdir after a run:
  config.json     the resolved Config (a run is reproducible from it alone)
  metrics.jsonl   one record per log/eval event: the source of truth (wandb mirrors it)
  summary.json    status (completed | diverged | failed), final metrics, counters, speed, times
  ckpt/           orbax checkpoints of the TrainState; a rerun resumes from the newest
  wandb/          the offline wandb run

The loop itself (`run_job`) is task-agnostic: a `Job` supplies the batches, train step, evaluation
and model description. Classification builds its job here; `task=detection` builds one in
`lcnn_jax.detect.train`, so both share checkpoints, resume, logs, wandb and the summary.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding

from lcnn_jax.atomic import write_json_atomic
from lcnn_jax.bench import StepTiming, compile_and_times
from lcnn_jax.compress.quantize import qat_model
from lcnn_jax.config import Config, from_json, to_dict
from lcnn_jax.count import Counts
from lcnn_jax.data.pipeline import Preprocess, TrainBatches, eval_batches, normalisation
from lcnn_jax.data.sources import Split, load_split
from lcnn_jax.errors import ConfigError
from lcnn_jax.net import Net, init_variables
from lcnn_jax.resolve import resolve_model
from lcnn_jax.scaling import counts as scaling_counts
from lcnn_jax.spec import NetSpec
from lcnn_jax.train import devices
from lcnn_jax.train.checkpoints import Checkpoints
from lcnn_jax.train.metrics import MetricLog, WandbMirror
from lcnn_jax.train.compressed import compress_summary, ptq_evaluate
from lcnn_jax.train.optim import schedule, train_transform
from lcnn_jax.train.state import TrainState, create_state
from lcnn_jax.train.steps import make_eval_step, make_train_step


class Diverged(RuntimeError):
    """The training loss became NaN or inf."""


def _initial_variables(model: Net, spec: NetSpec, config: Config, key: jax.Array) -> dict:
    variables = init_variables(model, spec.resolution, spec.in_channels, key=key)
    if not config.model.init_from:
        return variables
    from lcnn_jax.interop.pretrained import load_pretrained

    _, pretrained = load_pretrained(config.model.init_from)
    # Fine-tuning on another class count: keep everything but the classifier.
    same_head = pretrained["params"]["classifier"]["kernel"].shape == variables["params"]["classifier"]["kernel"].shape
    params = dict(pretrained["params"])
    if not same_head:
        params["classifier"] = variables["params"]["classifier"]
    return {"params": params, "batch_stats": pretrained["batch_stats"]}


def _check_workdir(workdir: Path, config: Config) -> bool:
    """True when `workdir` holds this same run (resume); refuses a different run's workdir."""
    existing = workdir / "config.json"
    if not existing.exists():
        return False
    if from_json(existing.read_text()) != config:
        raise ConfigError(f"workdir {str(workdir)!r} holds a run with a different config; use a new workdir")
    return True


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What training and evaluating one config share. Building it checks input and writes nothing."""

    train_split: Split
    eval_split: Split
    spec: NetSpec
    scaling: dict  # resolve_model's record ({} without scaling)
    model: Net  # the float network (latency, int8 PTQ)
    trained: object  # what trains and evaluates: `model`, or its fake-quantized QAT wrapper
    prep: Preprocess  # normalised by the training split's statistics
    mesh: Mesh
    repl: NamedSharding  # weights and train state
    data: NamedSharding  # batches
    eval_fn: Callable


def _setup(config: Config) -> _Setup:
    """Load the splits, resolve the network, and build the placement, preprocessing and eval step."""
    cfg_d = config.data
    train_split = load_split(cfg_d.dataset, cfg_d.train_split, cfg_d.data_dir, cfg_d.max_train_examples)
    eval_split = load_split(cfg_d.dataset, cfg_d.eval_split, cfg_d.data_dir)
    spec, scaling = resolve_model(config, train_split.num_classes)
    model = Net(spec, impl=config.model.impl)
    trained = qat_model(model, config.compress.bits, config.compress.act_bits)
    mesh = devices.data_mesh()
    prep = Preprocess(spec.resolution, spec.in_channels, *normalisation(train_split))
    return _Setup(train_split, eval_split, spec, scaling, model, trained, prep, mesh, devices.replicated(mesh),
                  devices.batch_sharded(mesh), devices.jit_eval_step(make_eval_step(trained), mesh))


def _evaluate(eval_fn, state: TrainState, split: Split, config: Config, prep: Preprocess, sharding) -> dict:
    """Raw and EMA ('ema_'-prefixed) top1/top5/loss over `split`, reading its batches once."""
    bs = config.data.eval_batch_size
    weights = {"": state.params, "ema_": state.ema_params}
    totals = dict.fromkeys(weights)
    for batch in eval_batches(split, config.data, prep, bs):
        batch = devices.put_batch(batch, sharding, bs)
        for tag, params in weights.items():
            sums = eval_fn(params, state.batch_stats, batch)
            totals[tag] = sums if totals[tag] is None else jax.tree.map(jnp.add, totals[tag], sums)
    out = {}
    for tag, sums in jax.device_get(totals).items():
        n = float(sums["count"])
        out.update({f"{tag}{k}": float(sums[k]) / n for k in ("top1", "top5", "loss")})
    return out


def latency_ms(model, state: TrainState, resolution: int, channels: int, repeats: int = 20) -> dict:
    """p50/p90 of a batch-1 eval forward pass of `model` on a (1, R, R, C) input, after compilation."""
    x = jnp.zeros((1, resolution, resolution, channels), jnp.float32)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    compile_s, runs = compile_and_times(lambda v, x: model.apply(v, x, train=False), variables, x, repeats=repeats)
    timing = StepTiming(batch=1, compile_s=compile_s, seconds=tuple(runs))
    return {"p50": timing.p50_ms, "p90": timing.p90_ms}


def _progress(total: int, initial: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr,
                disable=not enabled, desc="train")


@dataclasses.dataclass(frozen=True)
class Job:
    """What the shared loop needs from a task. Building one checks input (config, dataset, model) and
    writes nothing, so bad input leaves the workdir untouched."""

    batches: object  # .steps_per_epoch and .from_step(step): the resumable training stream
    mesh: Mesh
    repl: NamedSharding  # weights and train state
    data: NamedSharding  # batches
    init_variables: Callable[[jax.Array], dict]  # key -> initial {'params', 'batch_stats'}
    make_train_step: Callable  # tx -> train_step(state, batch), not jitted
    evaluate: Callable[[TrainState], dict]  # raw and EMA ('ema_'-prefixed) eval metrics
    info: dict  # summary fields describing the model: name, resolution, counts, scaling, ...
    finish: Callable[[TrainState, int], dict]  # (state, total steps) -> extra summary fields of a completed run


def model_info(spec, counts: Counts, scaling: dict, config: Config) -> dict:
    """The summary fields that describe a run's model: name, multipliers, counts and scaling."""
    return dict(model=spec.name, resolution=spec.resolution, width=spec.width, depth=spec.depth,
                num_classes=spec.num_classes, macs=counts.macs, flops=counts.flops, params=counts.params,
                activations=counts.activations, strategy=config.scaling.strategy, target=config.scaling.target,
                scaling=scaling)


def _classification_job(config: Config) -> Job:
    s = _setup(config)
    cfg_d, cfg_o = config.data, config.optim
    batches = TrainBatches(s.train_split, cfg_d, s.prep, cfg_d.batch_size, config.train.seed)  # checks the batch size
    counts = scaling_counts(s.spec)  # memoised: resolve_model has counted this spec when it scaled it

    def make_step(tx):
        return make_train_step(s.trained, tx, label_smoothing=cfg_o.label_smoothing, ema_decay=cfg_o.ema_decay,
                               precision=config.train.precision)

    def finish(state: TrainState, total_steps: int) -> dict:
        out = compress_summary(config, counts, state.params, total_steps)
        if config.compress.ptq_int8:
            ema = {"params": state.ema_params, "batch_stats": state.batch_stats}
            out.update(ptq_evaluate(s.model, ema, config, s.train_split, s.eval_split, s.prep))
        out["eval_latency_ms"] = latency_ms(s.model, state, s.spec.resolution, s.spec.in_channels)
        return out

    return Job(
        batches=batches, mesh=s.mesh, repl=s.repl, data=s.data,
        init_variables=lambda key: _initial_variables(s.model, s.spec, config, key),
        make_train_step=make_step,
        evaluate=lambda state: _evaluate(s.eval_fn, state, s.eval_split, config, s.prep, s.data),
        info=model_info(s.spec, counts, s.scaling, config), finish=finish,
    )


def make_job(config: Config) -> Job:
    """The job of `config.task`: classification here, detection in lcnn_jax.detect.train."""
    if config.task == "detection":
        from lcnn_jax.detect.train import detection_job

        return detection_job(config)
    return _classification_job(config)


def train_and_evaluate(config: Config, workdir: str | Path) -> dict:
    """Train the configured model (classifier or, with task=detection, detector), evaluating raw and
    EMA weights; returns the run summary.

    All input checks (config, dataset, devices, an existing workdir) happen before anything is
    written, so bad input leaves the workdir untouched. A NaN/inf loss ends the run with status
    'diverged' and raises `Diverged`.
    """
    t_start = time.perf_counter()
    workdir = Path(workdir)
    devices.maybe_initialize_distributed()
    devices.check_batch(config.data.batch_size, "data.batch_size")
    devices.check_batch(config.data.eval_batch_size, "data.eval_batch_size")
    resume = _check_workdir(workdir, config)
    from lcnn_jax.detect.registry import check_model_name

    check_model_name(config.model.name, config.task)  # before any dataset is opened
    return run_job(config, workdir, make_job(config), resume, t_start)


def run_job(config: Config, workdir: Path, job: Job, resume: bool, t_start: float) -> dict:
    """The training loop shared by every task: checkpoints and resume, metrics.jsonl and its wandb
    mirror, evaluation, divergence, and summary.json (see the module docstring)."""
    cfg_d, cfg_t = config.data, config.train
    spe = job.batches.steps_per_epoch
    total_steps = max(1, math.ceil(cfg_t.epochs * spe))
    eval_every = max(1, int(round(cfg_t.eval_every_epochs * spe)))
    lr = schedule(config.optim, spe, total_steps)
    tx = train_transform(config, lr, total_steps)  # checks the compress config

    workdir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(workdir / "config.json", to_dict(config))
    init_key, dropout_key = jax.random.split(jax.random.key(cfg_t.seed))
    state = jax.device_put(create_state(job.init_variables(init_key), tx, dropout_key), job.repl)
    ckpts = Checkpoints(workdir / "ckpt", cfg_t.checkpoint_every_steps, cfg_t.keep_checkpoints)
    start = ckpts.latest_step() if resume else None
    if start is not None:
        state = ckpts.restore(start, state)
    start = start or 0
    log = MetricLog(workdir / "metrics.jsonl", resume_step=start)
    wb = WandbMirror(config.wandb, workdir, to_dict(config), resume=resume)

    train_step = devices.jit_train_step(job.make_train_step(tx), job.mesh)
    summary = dict(status="running", workdir=str(workdir), task=config.task, **job.info,
                   devices=jax.device_count(), steps=total_steps, steps_per_epoch=spe, batch_size=cfg_d.batch_size)
    bar = _progress(total_steps, start, cfg_t.progress and jax.process_index() == 0)
    status, error, last_eval = "completed", None, {}
    compile_s, data_wait = 0.0, 0.0
    steady_time, steady_images = 0.0, 0
    try:
        stream = job.batches.from_step(start)
        pending: list[dict] = []
        t_window = time.perf_counter()
        for step in range(start, total_steps):
            t_data = time.perf_counter()
            host_batch = next(stream)
            data_wait += time.perf_counter() - t_data
            batch = devices.put_batch(host_batch, job.data, cfg_d.batch_size)
            if step == start:
                t0 = time.perf_counter()
                compiled = train_step.lower(state, batch).compile()
                compile_s = time.perf_counter() - t0
                t_window = time.perf_counter()
            state, metrics = compiled(state, batch)
            pending.append(metrics)
            done = step + 1
            if done % cfg_t.log_every_steps == 0 or done == total_steps:
                host = jax.device_get(pending)
                elapsed = time.perf_counter() - t_window
                if step > start or len(pending) > 1:
                    steady_time += elapsed
                    steady_images += len(pending) * cfg_d.batch_size
                bad = int(jax.device_get(state.nonfinite_step))
                if bad >= 0:
                    raise Diverged(f"loss became NaN/inf at step {bad}")
                record = {"step": done, "epoch": done / spe, "split": "train", "lr": float(lr(done - 1)),
                          "img_per_s": len(pending) * cfg_d.batch_size / max(elapsed, 1e-9)}
                for k in host[0]:
                    record[k] = float(np.mean([h[k] for h in host]))
                log.write(record)
                wb.log(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", img_s=f"{record['img_per_s']:.0f}")
                pending, t_window = [], time.perf_counter()
            bar.update(1)
            if done % eval_every == 0 or done == total_steps:
                last_eval = job.evaluate(state)
                record = {"step": done, "epoch": done / spe, "split": "eval", **last_eval}
                log.write(record)
                wb.log(record)
                t_window = time.perf_counter()  # evaluation time is not training throughput
            ckpts.save(done, state, force=done == total_steps)
        if not last_eval:  # rerun of a finished run: nothing left to train, report its metrics
            last_eval = job.evaluate(state)
    except Diverged as e:
        status, error = "diverged", str(e)
        summary["diverged_step"] = int(jax.device_get(state.nonfinite_step))
    except BaseException as e:
        status, error = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        bar.close()
        summary.update(status=status, final_step=int(jax.device_get(state.step)), **last_eval)
        if error:
            summary["error"] = error
        summary.update(
            train_img_per_s=steady_images / steady_time if steady_time else None,
            compile_s=compile_s, data_wait_s=data_wait,
        )
        if status == "completed":
            summary.update(job.finish(state, total_steps))
        summary["wall_s"] = time.perf_counter() - t_start
        write_json_atomic(workdir / "summary.json", summary)
        wb.summary(summary)
        wb.finish(exit_code=0 if status == "completed" else 1)
        log.close()
        ckpts.close()
    if status == "diverged":
        raise Diverged(summary["error"])
    return summary


def restore_newest(workdir: str | Path, job: Job | None = None) -> tuple[Config, Job, TrainState, int]:
    """(config, job, train state, step) of the newest checkpoint of a run directory (`job`: one already
    built for its config)."""
    workdir = Path(workdir)
    if not (workdir / "config.json").exists():
        raise ConfigError(f"{str(workdir)!r} is not a run directory (no config.json)")
    config = from_json((workdir / "config.json").read_text())
    ckpts = Checkpoints(workdir / "ckpt", config.train.checkpoint_every_steps, config.train.keep_checkpoints,
                        create=False)
    try:
        step = ckpts.latest_step()
        if step is None:
            raise ConfigError(f"{str(workdir)!r} has no checkpoint yet")
        job = job or make_job(config)
        # The restore target: the TrainState's structure, dtypes and shardings (its values are replaced).
        tx = train_transform(config, schedule(config.optim, 1, 1), 1)
        target = create_state(job.init_variables(jax.random.key(0)), tx)
        state = ckpts.restore(step, jax.device_put(target, job.repl))
    finally:
        ckpts.close()
    return config, job, state, step


def evaluate_workdir(workdir: str | Path) -> dict:
    """Evaluate the newest checkpoint of a run directory (raw and EMA weights)."""
    _, job, state, step = restore_newest(workdir)
    return {"step": step, **job.evaluate(state)}
