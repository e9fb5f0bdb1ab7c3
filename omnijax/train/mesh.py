"""Device mesh and parameter/batch shardings from config.

The mesh has four named axes, always in this order:
    data     pure data parallelism (params replicated)
    fsdp     data parallelism with params/optimizer state sharded over it (ZeRO-3 style)
    context  sequence (token) parallelism for long videos
    tensor   tensor (head / mlp) parallelism
Sizes come from config; one size may be -1 = "whatever devices are left". Parameters carry
logical axis names (`embed`, `heads`, `mlp`, ...) in their NNX metadata; a rules table in the
config maps each logical name to mesh axes, so a new parallelism layout is a config change.

All axes are `AxisType.Auto` (GSPMD propagation with sharding constraints), scoped with
`jax.set_mesh`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Iterable, Iterator, Mapping, Sequence

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from omnijax.models import partitioning

MESH_AXES = partitioning.MESH_AXES          # ("data", "fsdp", "context", "tensor")
# The batch dimension of every input is split over both data-parallel axes.
BATCH_AXES = ("data", "fsdp")

log = logging.getLogger(__name__)


# One mesh builder for the whole project lives beside the rules it serves.
mesh_shape = partitioning.mesh_shape
make_mesh = partitioning.make_mesh


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


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Leading (batch) dim split over data x fsdp; everything else replicated."""
    return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in BATCH_AXES)


def describe(mesh: Mesh) -> str:
    return " ".join(f"{a}={mesh.shape[a]}" for a in MESH_AXES) + \
        f" ({mesh.devices.size} devices, {jax.process_count()} processes)"
