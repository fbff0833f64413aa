"""Execute a sweep's runs through submitit: local processes here, SLURM on a cluster.

Nothing about progress lives in the runner: a run's state is read from its directory
(`runs/RUN_ID/`, RUN_ID = hash of the resolved config):

  completed / diverged   summary.json says so; never run again
  running                another process holds runs/RUN_ID/.lock (an flock, released on death)
  failed                 it ran and did not finish; retried while attempts < 1 + max_retries
  pending                never started

So a killed runner loses nothing: restarted, it waits for runs still going, resumes interrupted
ones from their checkpoints, and never starts a config twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterator

from lcnn_jax.config import Config, from_json, run_id, to_dict
from lcnn_jax.errors import ConfigError
from lcnn_jax.sweep.sweepfile import SweepFile, run_configs

@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep: its id, resolved config and directory."""

    run_id: str
    config: Config
    workdir: Path


def sweep_dir(sweep: SweepFile, out: str | Path | None = None) -> Path:
    """Where a sweep's runs, results and report live (default: workdirs/sweeps/NAME)."""
    return Path(out) if out else Path("workdirs") / "sweeps" / sweep.name


def runs_for(configs, out: Path) -> list[Run]:
    """The distinct runs of `configs` in first-seen order (a config listed twice runs once)."""
    seen: dict[str, Run] = {}
    for config in configs:
        rid = run_id(config)
        seen.setdefault(rid, Run(rid, config, out / "runs" / rid))
    return list(seen.values())


def plan(sweep: SweepFile, out: Path, extra: tuple[str, ...] = ()) -> list[Run]:
    """Every distinct run of the sweep."""
    return runs_for(run_configs(sweep, extra), out)


@contextlib.contextmanager
def run_lock(workdir: Path, blocking: bool = False) -> Iterator[bool]:
    """Hold runs/RUN_ID/.lock while a run executes; yields False if another process holds it."""
    workdir.mkdir(parents=True, exist_ok=True)
    with open(workdir / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def attempts(workdir: Path) -> int:
    """How many times this run has been started."""
    path = workdir / "attempts.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def read_summary(workdir: Path) -> dict | None:
    """The run's summary.json, or None before it has written one."""
    path = workdir / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def run_state(workdir: Path, summary: dict | None = None) -> str:
    """completed / diverged (final, from summary.json), running (locked), failed (started before) or pending.

    Pass `summary` when it has been read already.
    """
    summary = summary if summary is not None else read_summary(workdir)
    if summary and summary.get("status") in ("completed", "diverged"):
        return summary["status"]
    if workdir.exists():
        with run_lock(workdir) as free:
            if not free:
                return "running"
    return "failed" if attempts(workdir) else "pending"


def execute(config_json: str, workdir: str, cores: list[int] | None, gpus: list[int] | None, cache_dir: str) -> dict:
    """Body of one job (runs in the submitit process): pin devices, take the lock, train."""
    if cores:
        os.sched_setaffinity(0, cores)  # XLA sizes its thread pool from the affinity mask
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
    from lcnn_jax.runtime import enable_compilation_cache

    # Runs share architectures (seeds, repeats, other sweeps): compile each once.
    enable_compilation_cache(cache_dir)
    from lcnn_jax.train.loop import Diverged, train_and_evaluate

    path = Path(workdir)
    with run_lock(path) as mine:
        if not mine:
            return {"status": "running-elsewhere"}
        with open(path / "attempts.jsonl", "a") as f:
            f.write(json.dumps({"started": time.time(), "pid": os.getpid()}) + "\n")
        try:
            summary = train_and_evaluate(from_json(config_json), path)
        except Diverged:
            summary = read_summary(path)
    return {k: summary.get(k) for k in ("status", "top1", "ema_top1", "wall_s")}


def _slots(workers: int, gpus_per_worker: int) -> list[tuple[list[int] | None, list[int] | None]]:
    """The CPU cores (and GPUs) each worker slot may use."""
    cores = sorted(os.sched_getaffinity(0))
    per = max(1, len(cores) // workers)
    slots = []
    for i in range(workers):
        mine = cores[i * per : (i + 1) * per] if workers > 1 else None
        gpus = list(range(i * gpus_per_worker, (i + 1) * gpus_per_worker)) if gpus_per_worker else None
        slots.append((mine, gpus))
    return slots


def make_executor(kind: str, folder: Path, slurm: dict | None = None):
    """A submitit executor: 'local' processes or 'slurm' jobs (slurm holds partition, time, gpus, cpus)."""
    import submitit

    if kind == "local":
        executor = submitit.LocalExecutor(folder=str(folder))
        executor.update_parameters(timeout_min=int((slurm or {}).get("time", 24 * 60)))
        return executor
    if kind == "slurm":
        executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
        s = slurm or {}
        params = dict(timeout_min=int(s.get("time", 240)), cpus_per_task=int(s.get("cpus", 8)))
        if s.get("partition"):
            params["slurm_partition"] = s["partition"]
        if s.get("gpus"):
            params["gpus_per_node"] = int(s["gpus"])
        executor.update_parameters(**params)
        return executor
    raise ConfigError(f"executor must be local or slurm, got {kind!r}")


def run_sweep(
    runs: list[Run], out: Path, *, workers: int = 1, executor: str = "local", max_retries: int = 1,
    gpus_per_worker: int = 0, slurm: dict | None = None, progress: bool = True, poll_s: float = 0.5,
) -> dict[str, str]:
    """Run every unfinished run with at most `workers` at a time; returns run_id -> final state."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    ex = make_executor(executor, out / "submitit", slurm)
    from lcnn_jax.runtime import compilation_cache_dir

    cache_dir = str(Path(compilation_cache_dir()).absolute())
    slots = _slots(workers, gpus_per_worker)
    # Seeds last: a later seed of an architecture then finds it in the compilation cache
    # instead of compiling it at the same time on another worker.
    order = sorted(range(len(runs)), key=lambda i: (runs[i].config.train.seed, i))
    queue = [runs[i] for i in order if run_state(runs[i].workdir) in ("pending", "failed", "running")]
    done = len(runs) - len(queue)
    free = list(range(workers))
    in_flight: dict[int, tuple[Run, object]] = {}
    waiting: list[Run] = []  # held by a process we did not start (e.g. left by a killed runner)
    bar = tqdm(total=len(runs), initial=done, desc=f"sweep {out.name}", unit="run", file=sys.stderr, disable=not progress)
    try:
        while queue or in_flight or waiting:
            for run in list(waiting):
                if run_state(run.workdir) != "running":
                    waiting.remove(run)
                    queue.append(run)
            while queue and free:
                run = queue.pop(0)
                state = run_state(run.workdir)
                if state in ("completed", "diverged"):
                    bar.update(1)
                    continue
                if state == "running":
                    waiting.append(run)
                    continue
                if state == "failed" and attempts(run.workdir) > max_retries:
                    bar.update(1)
                    continue
                slot = free.pop(0)
                cores, gpus = slots[slot]
                job = ex.submit(execute, json.dumps(to_dict(run.config)), str(run.workdir.absolute()), cores, gpus, cache_dir)
                in_flight[slot] = (run, job)
            for slot, (run, job) in list(in_flight.items()):
                if not job.done():
                    continue
                del in_flight[slot]
                free.append(slot)
                state = run_state(run.workdir)
                if state == "failed" and attempts(run.workdir) <= max_retries:
                    queue.append(run)  # retry
                elif state == "running":
                    waiting.append(run)
                else:
                    bar.update(1)
                    if state == "failed":
                        tqdm.write(f"run {run.run_id} failed {attempts(run.workdir)}x; see {run.workdir}", file=sys.stderr)
            time.sleep(poll_s)
    finally:
        bar.close()
    return {r.run_id: run_state(r.workdir) for r in runs}
