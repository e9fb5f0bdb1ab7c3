"""The training job's view of the mesh: the config's rules table, the scope the step runs
in, and what the logs say about it.

The mesh has four named axes, always in this order:
    data     pure data parallelism (params replicated)
    fsdp     data parallelism with params/optimizer state sharded over it (ZeRO-3 style)
    context  sequence (token) parallelism for long videos
    tensor   tensor (head / mlp) parallelism
Sizes come from config (`mesh.shape`; one size may be -1 = "whatever devices are left")
and are resolved by `partitioning.make_mesh`. Parameters carry logical axis names (`embed`,
`heads`, `mlp`, ...) in their NNX metadata; `mesh.rules` in the config replaces entries of
`partitioning.DEFAULT_RULES`, so a new parallelism layout is a config change. Batches are
split by the `batch` rule (`partitioning.batch_sharding`), the same rule the model's
activation constraints use.

All axes are `AxisType.Auto` (GSPMD propagation with sharding constraints), scoped with
`jax.set_mesh`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Iterable, Iterator, Mapping, Sequence

import jax
from jax.sharding import Mesh

from omnijax.models import partitioning
from omnijax.models.partitioning import MESH_AXES

log = logging.getLogger(__name__)


def rules_from_config(rules: Mapping[str, Any] | Iterable[Sequence[Any]] | None) -> dict[str, Any]:
    """The model's logical-axis rules (`partitioning.DEFAULT_RULES`) with the config's
    entries replacing or adding names. `rules` is a mapping or a list of (name, axes) pairs;
    axes is a mesh axis, a list/tuple of them, or None."""
    table = dict(partitioning.DEFAULT_RULES)
    pairs = rules.items() if isinstance(rules, Mapping) else (rules or ())
    for name, axes in pairs:
        table[name] = tuple(axes) if isinstance(axes, (list, tuple)) else axes
    for name, axes in table.items():
        for ax in (axes if isinstance(axes, tuple) else (axes,)):
            if ax is not None and ax not in MESH_AXES:
                raise ValueError(f"rule {name!r} -> {axes!r}: {ax!r} is not a mesh axis {MESH_AXES}")
    return table


def config_devices(mesh_cfg: Mapping[str, Any]) -> list | None:
    """The devices `mesh.devices` names: None (all of them) for 0, else the first N of a
    single process's devices."""
    n = int(mesh_cfg.get("devices", 0) or 0)
    if not n:
        return None
    if jax.process_count() > 1:
        raise ValueError(f"mesh.devices={n}: only for one process (this job has {jax.process_count()}); "
                         "set mesh.shape instead")
    if not 0 < n <= jax.device_count():
        raise ValueError(f"mesh.devices={n}: expected 1..{jax.device_count()} (the devices here), or 0 for all")
    return jax.devices()[:n]


@contextlib.contextmanager
def activate(mesh: Mesh, rules: Mapping[str, Any]) -> Iterator[None]:
    """Make `mesh` and `rules` the ambient ones for a block: `jax.set_mesh` for GSPMD and
    the rules that the model's `partitioning.constrain` calls resolve activations with.

    Scoped, never global: a mesh left installed makes later `nnx.eval_shape` calls and
    orbax restores in the same process read logical names as mesh axes.
    """
    with jax.set_mesh(mesh), partitioning.axis_rules(rules):
        yield


def state_shardings(state: Any, mesh: Mesh, rules: Mapping[str, Any]) -> Any:
    """NamedSharding for every leaf of an `nnx.State` (or a tree holding states, such as an
    optax state built over params: moments carry their parameter's metadata). Leaves
    without logical names (scalars, counts) are replicated; axes that do not divide a
    dimension are dropped for that dimension."""
    return partitioning.logical_to_sharding(state, mesh, rules)


def data_parallel_size(mesh: Mesh, rules: Mapping[str, Any] | None = None) -> int:
    """How many ways the batch is split: the product of the mesh axes of the `batch` rule."""
    axes = partitioning.batch_sharding(mesh, 1, rules).spec[0]
    axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
    return math.prod(mesh.shape[a] for a in axes)


def describe(mesh: Mesh) -> str:
    return " ".join(f"{a}={mesh.shape[a]}" for a in MESH_AXES) + \
        f" ({mesh.devices.size} devices, {jax.process_count()} processes)"
