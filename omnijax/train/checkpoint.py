"""Orbax checkpoints of a training run: state + data-iterator position + config.

Layout under `WORKDIR/checkpoints/<step>/`:
    state/   TrainState (params, optimizer, EMA, step, rng, guard counters), sharded arrays
    data/    the input iterator's state, one JSON file per process (grain's handler)
    config/  the run's ConfigDict as JSON (what produced these weights)

Saves are asynchronous (device->host copy blocks, the write does not), kept `max_to_keep`,
taken every `save_every` steps and on demand (SIGTERM/SIGINT, end of run). Restores take a
target with shardings, so a checkpoint written on one mesh restores onto another. Paths go
through etils.epath, so `gs://` and `s3://` workdirs work through tensorstore.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from grain import checkpoint as grain_ckpt

log = logging.getLogger(__name__)

STATE, DATA, CONFIG = "state", "data", "config"


def as_path(path: str | os.PathLike) -> epath.Path:
    """Absolute epath; remote URIs (gs://, s3://) pass through untouched."""
    p = str(path)
    return epath.Path(p if "://" in p else os.path.abspath(p))


class Checkpointer:
    """Thin policy layer over `ocp.CheckpointManager` for one run's directory."""

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 3,
                 save_every: int = 1000, async_save: bool = True):
        self.directory = as_path(directory)
        self.save_every = int(save_every)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=int(max_to_keep), create=True,
            enable_async_checkpointing=bool(async_save),
            # Our own policy decides when to save (interval, signal, end); orbax just writes.
            save_interval_steps=1)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=(STATE, DATA, CONFIG))

    # -------------------------------------------------------------------- queries
    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def due(self, step: int) -> bool:
        return self.save_every > 0 and step % self.save_every == 0

    # -------------------------------------------------------------------- save / restore
    def save(self, step: int, state: dict[str, Any], data_iter: Any | None,
             config: dict[str, Any]) -> bool:
        """Start writing checkpoint `step` (returns once arrays are copied to host)."""
        items = {STATE: ocp.args.StandardSave(state),
                 CONFIG: ocp.args.JsonSave(config)}
        if data_iter is not None:
            items[DATA] = grain_ckpt.CheckpointSave(data_iter)
        saved = self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        if saved:
            log.info("checkpoint %d -> %s (async)", step, self.directory)
        return saved

    def restore(self, step: int, target: dict[str, Any], data_iter: Any | None = None):
        """State restored into `target`'s shapes and shardings; `data_iter` repositioned."""
        items = {STATE: ocp.args.StandardRestore(target)}
        if data_iter is not None:
            items[DATA] = grain_ckpt.CheckpointRestore(data_iter)
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        return out[STATE]

    def restore_config(self, step: int | None = None) -> dict[str, Any]:
        step = self.latest_step() if step is None else step
        out = self.manager.restore(step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()}))
        return out[CONFIG]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def restore_subset(directory: str | os.PathLike, target: dict[str, Any],
                   step: int | None = None) -> dict[str, Any]:
    """Restore only the entries of `target` (e.g. {'params', 'ema'}) from another run.

    Used by `init_from`: a curriculum stage starts from the previous stage's weights with a
    fresh optimizer, step and data position. `directory` is that run's workdir or its
    `checkpoints/` folder; the latest step is used unless `step` is given.
    """
    root = as_path(directory)
    if (root / "checkpoints").exists():
        root = root / "checkpoints"
    if not root.exists():
        raise FileNotFoundError(f"init_from: {root} does not exist")
    mngr = ocp.CheckpointManager(root, item_names=(STATE, DATA, CONFIG),
                                 options=ocp.CheckpointManagerOptions(create=False))
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"init_from: no checkpoint under {root}")
    restore_args = jax.tree.map(
        lambda a: ocp.ArrayRestoreArgs(sharding=a.sharding, global_shape=a.shape, dtype=a.dtype),
        target)
    out = mngr.restore(step, args=ocp.args.Composite(**{
        STATE: ocp.args.PyTreeRestore(item=target, restore_args=restore_args,
                                      partial_restore=True)}))
    mngr.close()
    log.info("init_from %s step %d: restored %s", root, step, sorted(target))
    return out[STATE]


def write_json(path: epath.Path, blob: Any) -> None:
    if jax.process_index() == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(blob, indent=2, sort_keys=True, default=str))
