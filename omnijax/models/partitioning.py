"""Logical axis names -> mesh axes: the one table that decides how the model is sharded.

Model code never names mesh axes. Parameters carry *logical* names in their NNX metadata
(`out_sharding`, set by `param_init`), activations are pinned with `constrain(x, names)`,
and a rules table maps each logical name to mesh axes of the mesh `data, fsdp, context,
tensor`. A new parallelism layout (FSDP -> FSDP + TP -> context parallel) is a change of
rules, nothing else.

Resolution rules (`spec_for`):
- a logical name maps to one mesh axis, a tuple of them, or None (replicated);
- mesh axes the mesh does not have, or of size 1, are dropped;
- a mesh axis is used at most once per array (the first dimension that asks gets it), so
  `batch -> (data, fsdp)` and `embed -> fsdp` can coexist in one rules table;
- when `shape` is given, axes that do not divide the dimension are dropped (tiny test
  models on 8 devices stay valid instead of failing to compile).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

MeshAxes = str | tuple[str, ...] | None
Rules = Mapping[str, MeshAxes]

MESH_AXES = ("data", "fsdp", "context", "tensor")

# Parameters use plain names (embed, heads, mlp...); activations use act_* names so the
# batch dimension can take fsdp while the weights' embed dimension also takes fsdp.
DEFAULT_RULES: dict[str, MeshAxes] = {
    # parameters
    "layers": None,            # the stacked (scanned) layer axis
    "embed": "fsdp",           # model width (FSDP shards weights along it)
    "heads": "tensor",         # attention heads (flattened heads * head_dim)
    "mlp": "tensor",           # MLP hidden
    "modulation": "tensor",    # adaLN outputs (6 * width)
    "patch": None,             # patch-embedding input (p_t * p_h * p_w * channels)
    "vocab": None,             # condition-encoder feature dims (text / audio inputs)
    "norm": None,              # norm scales
    "conv": None,              # conv kernel spatial / channel dims (pose guider)
    "tokens": None,            # learned null / slot tables
    # activations
    "batch": ("data", "fsdp"),
    "length": "context",       # visual token sequence
    "text_length": None,
    "act_embed": None,
    "act_heads": "tensor",
    "act_mlp": "tensor",
    "head_dim": None,
}

_active_rules: dict[str, MeshAxes] = dict(DEFAULT_RULES)


def get_rules() -> dict[str, MeshAxes]:
    """The rules currently installed (a copy)."""
    return dict(_active_rules)


def set_rules(rules: Rules | None) -> None:
    """Install `rules` (None -> DEFAULT_RULES) for `constrain` and `logical_to_sharding`."""
    global _active_rules
    _active_rules = dict(DEFAULT_RULES if rules is None else rules)


@contextlib.contextmanager
def axis_rules(rules: Rules) -> Iterator[None]:
    """Temporarily install `rules`; restores the previous table on exit."""
    previous = get_rules()
    set_rules(rules)
    try:
        yield
    finally:
        set_rules(previous)


def _mesh_sizes(mesh: Any) -> dict[str, int] | None:
    if mesh is None or getattr(mesh, "empty", False):
        return None
    return dict(zip(mesh.axis_names, mesh.axis_sizes))


def spec_for(logical_axes: Sequence[str | None], rules: Rules | None = None, mesh: Any = None,
             shape: Sequence[int] | None = None) -> P:
    """PartitionSpec for an array whose dimensions carry `logical_axes` (see module doc)."""
    rules = _active_rules if rules is None else rules
    sizes = _mesh_sizes(mesh)
    if shape is not None and len(shape) != len(logical_axes):
        raise ValueError(f"logical axes {tuple(logical_axes)} do not match shape {tuple(shape)}")
    used: set[str] = set()
    out: list[MeshAxes] = []
    for i, name in enumerate(logical_axes):
        if name is None:
            out.append(None)
            continue
        if name not in rules:
            raise KeyError(f"logical axis {name!r} has no rule; known: {sorted(rules)}")
        target = rules[name]
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        kept: list[str] = []
        for ax in axes:
            if ax in used:
                continue
            if sizes is not None:
                if ax not in sizes or sizes[ax] == 1:
                    continue
                if shape is not None and shape[i] % (math.prod(sizes[a] for a in kept) * sizes[ax]):
                    continue
            kept.append(ax)
        used.update(kept)
        out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return P(*out)


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """`with_sharding_constraint` by logical names; a no-op when no mesh is set.

    The mesh comes from `jax.set_mesh(mesh)`; without one (single device, tests) the array
    is returned untouched, so model code can constrain unconditionally.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty:
        return x
    spec = spec_for(logical_axes, mesh=mesh, shape=x.shape)
    if all(t == jax.sharding.AxisType.Explicit for t in mesh.axis_types):
        return jax.sharding.reshard(x, spec)
    return jax.lax.with_sharding_constraint(x, spec)


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int = 1, rules: Rules | None = None) -> NamedSharding:
    """The sharding of every input batch array of rank `ndim`: the leading dimension by the
    `batch` rule (default `data` x `fsdp`), the rest replicated; rank 0 is replicated.

    The one definition the data pipeline (`pipeline.to_global`, `pipeline.local_rows`) and
    the train step's in_shardings use: batches enter in the layout the model's
    `constrain(x, ("batch", ...))` calls ask for inside, so a change of the `batch` rule
    moves both together. Mesh axes of size 1 are dropped, as in `spec_for`.
    """
    if ndim == 0:
        return NamedSharding(mesh, P())
    return NamedSharding(mesh, spec_for(("batch",) + (None,) * (ndim - 1), rules, mesh))


def param_init(init: Any, *logical_axes: str | None) -> Any:
    """Wrap an initializer so the parameter records its logical axis names.

    Eager sharding is off: the parameter is created unsharded and placed later by
    `logical_to_sharding` (so building a model needs no mesh).
    """
    return nnx.with_partitioning(init, tuple(logical_axes), eager_sharding=False)


def logical_axes_of(variable: Any) -> tuple | None:
    """The logical names recorded on an NNX variable (None if it has none)."""
    meta = variable.get_metadata() if hasattr(variable, "get_metadata") else {}
    names = meta.get("out_sharding") or meta.get("sharding_names") or meta.get("sharding")
    return tuple(names) if names else None


def logical_to_sharding(abstract_state: Any, mesh: jax.sharding.Mesh, rules: Rules | None = None) -> Any:
    """A NamedSharding per leaf of an NNX state, from each variable's logical names.

    `abstract_state` is an `nnx.State` (abstract from `nnx.eval_shape`, or concrete);
    leaves without names are replicated. The result has the same tree structure as the
    state, with each Variable's value replaced by its NamedSharding, so it can be used
    directly as `jax.jit` in/out shardings or for `jax.device_put`.
    """
    rules = _active_rules if rules is None else rules

    def one(leaf: Any) -> Any:
        if isinstance(leaf, nnx.Variable):
            value = leaf.get_value() if hasattr(leaf, "get_value") else leaf.value
            names = logical_axes_of(leaf)
            shape = getattr(value, "shape", ())
            spec = P() if names is None else spec_for(names, rules, mesh, shape)
            return leaf.replace(NamedSharding(mesh, spec))
        shape = getattr(leaf, "shape", ())
        return NamedSharding(mesh, P(*([None] * len(shape))))

    return jax.tree.map(one, abstract_state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def mesh_shape(sizes: Mapping[str, int], n_devices: int) -> tuple[int, ...]:
    """Resolve the per-axis sizes, filling a single -1 with the devices left over.

    >>> mesh_shape({"data": 1, "fsdp": -1, "context": 1, "tensor": 2}, 8)
    (1, 4, 1, 2)
    """
    unknown = set(sizes) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected a subset of {MESH_AXES}")
    shape = [int(sizes.get(a, 1)) for a in MESH_AXES]
    fills = [i for i, s in enumerate(shape) if s == -1]
    if len(fills) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, shape))}")
    if any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"mesh sizes must be positive or -1, got {dict(zip(MESH_AXES, shape))}")
    known = math.prod(s for s in shape if s != -1)
    if fills:
        if n_devices % known:
            raise ValueError(f"{n_devices} devices cannot be split by the fixed mesh axes "
                             f"{dict(zip(MESH_AXES, shape))} (product {known})")
        shape[fills[0]] = n_devices // known
    if math.prod(shape) != n_devices:
        raise ValueError(f"mesh {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, "
                         f"{n_devices} available")
    return tuple(shape)


def make_mesh(sizes: Mapping[str, int], devices: Sequence[Any] | None = None) -> jax.sharding.Mesh:
    """A 4-axis `Auto` mesh over `devices` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(sizes, len(devices))
    auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
    if len(devices) == len(jax.devices()):
        # Topology-aware placement (ICI rings on TPU, NVLink islands on GPU).
        return jax.make_mesh(shape, MESH_AXES, axis_types=auto, devices=devices)
    return jax.sharding.Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)
