"""LoRA adapters on chosen linear projections of any NNX model.

    apply_lora(model, rank=128, alpha=64, targets=(r"blocks/.*/(q|k|v|out)$",), rngs=...)
        every nnx.Linear whose path ("blocks/visual/q", slash-joined) matches one of the
        regexes is wrapped in a LoRALinear: y = base(x) + (alpha / rank) * (x A) B
    trainable filter: LoRAParam (the train state's optimizer sees only adapters)
    merge_lora(model)  folds every adapter into its base kernel (W + alpha/rank * A B) and
        puts the plain nnx.Linear back: the exported model has no LoRA left in it.

A starts random (variance scaling) and B at zero, so an adapted model equals its base
until training moves B. Stacked (scanned) layers work: a kernel (L, in, out) gets adapters
(L, in, r) and (L, r, out) that the scan slices along with it. Adapters inherit the
logical axis names of their kernel (in-dim on A, out-dim on B) so they shard with it.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx import LoRAParam  # the variable type of adapters (also the optimizer filter)

__all__ = ["LoRAParam", "LoRALinear", "apply_lora", "merge_lora", "lora_paths"]


def _axes(variable: nnx.Variable) -> tuple | None:
    meta = variable.get_metadata()
    names = meta.get("out_sharding") or meta.get("sharding_names")
    return tuple(names) if names else None


class LoRALinear(nnx.Module):
    """A frozen nnx.Linear plus a trainable low-rank update."""

    def __init__(self, base: nnx.Linear, *, rank: int, alpha: float, rngs: nnx.Rngs):
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.rank = int(rank)
        self.scale = float(alpha) / float(rank)
        kernel = base.kernel
        shape = kernel.get_value().shape             # (*lead, in, out); lead = stacked layers
        *lead, din, dout = shape
        names = _axes(kernel)
        a_meta, b_meta = {}, {}
        if names:
            *lead_names, in_name, out_name = names
            a_meta = {"out_sharding": (*lead_names, in_name, None), "eager_sharding": False}
            b_meta = {"out_sharding": (*lead_names, None, out_name), "eager_sharding": False}
        dtype = kernel.get_value().dtype
        a_init = nnx.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=-2, out_axis=-1)
        self.lora_a = LoRAParam(a_init(rngs.params(), (*lead, din, self.rank), dtype), **a_meta)
        self.lora_b = LoRAParam(jnp.zeros((*lead, self.rank, dout), dtype), **b_meta)

    def __call__(self, x: jax.Array) -> jax.Array:
        y = self.base(x)
        dt = y.dtype
        delta = (x.astype(dt) @ self.lora_a[...].astype(dt)) @ self.lora_b[...].astype(dt)
        return y + delta * jnp.asarray(self.scale, dt)

    def merged(self) -> nnx.Linear:
        """The base Linear with W + scale * A B folded in (the adapter's effect, no adapter)."""
        kernel = self.base.kernel
        a = self.lora_a[...].astype(jnp.float32)
        b = self.lora_b[...].astype(jnp.float32)
        w = kernel.get_value()
        kernel.set_value((w.astype(jnp.float32) + self.scale * (a @ b)).astype(w.dtype))
        return self.base


def _path_str(path: Sequence) -> str:
    return "/".join(str(p) for p in path)


def _set_child(model: nnx.Module, path: Sequence, new: nnx.Module) -> None:
    parent = model
    for key in path[:-1]:
        parent = parent[key] if isinstance(key, int) else getattr(parent, key)
    key = path[-1]
    if isinstance(key, int):
        parent[key] = new
    else:
        setattr(parent, key, new)


def lora_paths(model: nnx.Module, targets: Iterable[str]) -> list[str]:
    """Paths of the nnx.Linear modules that `targets` (regexes, `re.search`) select."""
    pats = [re.compile(t) for t in targets]
    out = []
    for path, mod in nnx.iter_modules(model):
        if isinstance(mod, nnx.Linear) and path and any(p.search(_path_str(path)) for p in pats):
            out.append(_path_str(path))
    return out


def apply_lora(model: nnx.Module, *, rank: int, alpha: float, targets: Iterable[str],
               rngs: nnx.Rngs) -> nnx.Module:
    """Wrap the selected projections in place; returns `model`. Raises if none matched."""
    targets = list(targets)
    pats = [re.compile(t) for t in targets]
    chosen = [(path, mod) for path, mod in nnx.iter_modules(model)
              if isinstance(mod, nnx.Linear) and path
              and any(p.search(_path_str(path)) for p in pats)]
    if not chosen:
        linears = [_path_str(p) for p, m in nnx.iter_modules(model) if isinstance(m, nnx.Linear)]
        raise ValueError(f"LoRA targets {targets} match no nnx.Linear; the model has: "
                         f"{linears[:20]}{' ...' if len(linears) > 20 else ''}")
    for path, mod in chosen:
        _set_child(model, path, LoRALinear(mod, rank=rank, alpha=alpha, rngs=rngs))
    return model


def merge_lora(model: nnx.Module) -> nnx.Module:
    """Fold every adapter into its base kernel and unwrap it (in place); returns `model`."""
    chosen = [(path, mod) for path, mod in nnx.iter_modules(model) if isinstance(mod, LoRALinear)]
    for path, mod in chosen:
        _set_child(model, path, mod.merged())
    return model
