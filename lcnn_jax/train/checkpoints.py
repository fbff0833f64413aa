"""orbax checkpoints of the whole TrainState: save every K steps and at the end, keep the last N."""

from __future__ import annotations

from pathlib import Path

import orbax.checkpoint as ocp


class Checkpoints:
    """A thin wrapper over `ocp.CheckpointManager` for one run's `ckpt/` directory.

    orbax writes each step into a temporary directory and renames it when complete, so a run
    killed mid-save leaves only whole checkpoints behind.
    """

    def __init__(self, directory: str | Path, every_steps: int, keep: int, create: bool = True):
        """`create=False` only reads: a missing directory stays missing and has no steps."""
        self.manager = ocp.CheckpointManager(
            Path(directory).absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every_steps, create=create),
        )

    def latest_step(self) -> int | None:
        """Step of the newest complete checkpoint, or None."""
        return self.manager.latest_step()

    def save(self, step: int, state, force: bool = False) -> bool:
        """Save when `step` is on the interval (or `force`); blocks until written."""
        saved = self.manager.save(step, args=ocp.args.StandardSave(state), force=force)
        self.manager.wait_until_finished()
        return saved

    def restore(self, step: int, target):
        """Restore `step` into the structure, dtypes and shardings of `target`."""
        return self.manager.restore(step, args=ocp.args.StandardRestore(target))

    def close(self) -> None:
        """Finish pending writes."""
        self.manager.wait_until_finished()
        self.manager.close()
