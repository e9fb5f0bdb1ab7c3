"""Save and load an NNX module as an orbax checkpoint plus its config as JSON.

Layout of a module directory:
    DIR/config.json   the dataclass config (plain JSON) and the module kind
    DIR/state/        orbax StandardCheckpointer tree of every variable but RNG state

Loading builds the module abstractly (`nnx.eval_shape`, no allocation), then restores into
that structure, so a checkpoint from a differently-shaped config fails loudly in orbax
instead of silently broadcasting.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, TypeVar

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx

M = TypeVar("M", bound=nnx.Module)

_CONFIG = "config.json"
_STATE = "state"


def _abs(path: str | os.PathLike) -> epath.Path:
    p = epath.Path(path)
    # orbax needs absolute local paths; gs:// and s3:// are already absolute.
    return p if "://" in str(p) else epath.Path(os.path.abspath(os.fspath(p)))


def save_module(path: str | os.PathLike, module: nnx.Module, config: Any, *, kind: str,
                overwrite: bool = False) -> epath.Path:
    """Write `module`'s variables and `config` (a dataclass or dict) under `path`.

    Refuses to touch an existing directory unless `overwrite`: a finished checkpoint is
    never half-replaced. orbax writes the state to a temporary name and renames it whole.
    """
    path = _abs(path)
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
        path.rmtree()
    path.mkdir(parents=True)
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    _, state, _ = nnx.split(module, nnx.Not(nnx.RngState), ...)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(path / _STATE, state)
    checkpointer.wait_until_finished()
    tmp = path / (_CONFIG + ".tmp")
    tmp.write_text(json.dumps({"kind": kind, "config": cfg}, indent=2, sort_keys=True))
    tmp.rename(path / _CONFIG)
    return path


def read_config(path: str | os.PathLike, *, kind: str) -> dict:
    """The config dict stored by `save_module`, checking that it holds a `kind` module."""
    path = _abs(path)
    cfg_file = path / _CONFIG
    if not cfg_file.exists():
        raise FileNotFoundError(f"{path} is not an omnijax module directory: no {_CONFIG}")
    blob = json.loads(cfg_file.read_text())
    if blob.get("kind") != kind:
        raise ValueError(f"{path} holds a {blob.get('kind')!r} module, not a {kind!r} one")
    return blob["config"]


def load_module(path: str | os.PathLike, build: Callable[[dict], M], *, kind: str) -> M:
    """Rebuild the module with `build(config_dict)` and restore its saved variables."""
    path = _abs(path)
    cfg = read_config(path, kind=kind)
    abstract = nnx.eval_shape(lambda: build(cfg))
    graphdef, abstract_state, rng_state = nnx.split(abstract, nnx.Not(nnx.RngState), ...)
    state = ocp.StandardCheckpointer().restore(path / _STATE, abstract_state)
    # RNG state is not saved; a fresh build supplies it (inference modules carry none).
    if jax.tree.leaves(rng_state):
        _, _, rng_state = nnx.split(build(cfg), nnx.Not(nnx.RngState), ...)
    return nnx.merge(graphdef, state, rng_state)
