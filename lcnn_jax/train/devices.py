"""Data-parallel placement: one mesh axis 'data' over every device of every process.

Multi-host: when the environment names a coordinator (JAX_COORDINATOR_ADDRESS, or a SLURM
job with several tasks), `jax.distributed.initialize()` runs first; each process then feeds its
own slice of the global batch.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lcnn_jax.errors import ConfigError


def maybe_initialize_distributed() -> None:
    """Join a multi-process job when the environment describes one; otherwise do nothing."""
    multi_slurm = int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ
    if os.environ.get("JAX_COORDINATOR_ADDRESS") or multi_slurm:
        if not jax.distributed.is_initialized():
            jax.distributed.initialize()


def data_mesh() -> Mesh:
    """A 1-D mesh over all devices, axis name 'data'."""
    return Mesh(np.asarray(jax.devices()), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding for params and optimiser state: a full copy on every device."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding for batches: split along the leading axis."""
    return NamedSharding(mesh, PartitionSpec("data"))


def check_batch(batch_size: int, what: str) -> None:
    """The global batch must split evenly over devices."""
    n = jax.device_count()
    if batch_size % n:
        raise ConfigError(f"{what}={batch_size} must be a multiple of the device count ({n})")


def local_slice(batch_size: int) -> slice:
    """The rows of a global batch this process feeds."""
    per = batch_size // jax.process_count()
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def jit_train_step(train_step, mesh: Mesh):
    """`train_step(state, batch) -> (state, metrics)` jitted data-parallel: the state replicated and
    donated (updated in place), the batch split over the mesh."""
    repl = replicated(mesh)
    return jax.jit(train_step, in_shardings=(repl, batch_sharded(mesh)), out_shardings=(repl, repl), donate_argnums=0)


def jit_eval_step(eval_step, mesh: Mesh):
    """`eval_step(params, batch_stats, batch) -> sums` jitted data-parallel: weights replicated, batch split."""
    repl = replicated(mesh)
    return jax.jit(eval_step, in_shardings=(repl, repl, batch_sharded(mesh)), out_shardings=repl)


def put_batch(batch: dict, sharding: NamedSharding, batch_size: int) -> dict:
    """Place this process's rows of a global numpy batch as one global sharded array per key."""
    rows = local_slice(batch_size)
    return {k: jax.make_array_from_process_local_data(sharding, v[rows]) for k, v in batch.items()}
