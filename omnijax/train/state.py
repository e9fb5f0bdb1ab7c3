"""Train state: float32 master params, optimizer state, EMA, step, rng, guard counters.

The NNX model is split once into a static `graphdef` and three states:
    params  the trainable variables (the optimizer's `wrt`; `nnx.Param`, or `LoRAParam` only)
    frozen  everything else (a frozen backbone under LoRA, buffers); carried, never updated
The train step merges them back into a module inside `jax.jit` (split/merge pattern), so
the state itself is a plain pytree that jit can shard and donate and orbax can save.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from omnijax.train import mesh as mesh_lib


@flax.struct.dataclass
class TrainState:
    step: jax.Array          # () int32: optimizer updates attempted so far (skipped ones count)
    params: nnx.State        # trainable variables, float32 master copy
    frozen: nnx.State        # non-trainable variables (LoRA backbone, buffers)
    opt_state: Any           # optax state over `params`
    ema: nnx.State           # exponential moving average of `params`
    rng: jax.Array           # (2,) uint32 raw key data: checkpointable on every backend
    bad_steps: jax.Array     # () int32: consecutive non-finite steps (guard)
    skipped: jax.Array       # () int32: total non-finite steps skipped

    def as_dict(self) -> dict[str, Any]:
        """Shallow dict of the fields (the orbax item)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainState":
        return cls(**d)


# ----------------------------------------------------------------------------- optimizer

def learning_rate_schedule(cfg) -> optax.Schedule:
    """Linear warmup to `cfg.lr`, then down to `cfg.lr * cfg.final_lr_ratio` at `decay_steps`.

    `cfg.schedule`: "cosine" (the default) decays along a cosine from the warmup's end;
    "wsd" (warmup-stable-decay) holds `lr` and decays linearly over the last
    `cfg.cooldown_steps` steps only. A run whose length is a wall-clock budget trains at a
    constant rate and is cooled down afterwards by resuming it with `decay_steps` = the step
    it reached + `cooldown_steps`: the steps before the cooldown saw the same rate either way.
    """
    warmup, lr = int(cfg.warmup_steps), float(cfg.lr)
    total = max(int(cfg.decay_steps), warmup + 1)
    end = lr * float(cfg.final_lr_ratio)
    kind = str(cfg.get("schedule", "cosine"))
    if kind == "cosine":
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=lr, warmup_steps=warmup, decay_steps=total, end_value=end)
    if kind != "wsd":
        raise ValueError(f"optim.schedule={kind!r}: expected 'cosine' or 'wsd'")
    cooldown = int(cfg.get("cooldown_steps", 0))
    if not 0 <= cooldown <= total - warmup:
        raise ValueError(f"optim.cooldown_steps={cooldown}: expected 0..{total - warmup} "
                         f"(decay_steps {total} - warmup_steps {warmup})")
    stable = total - warmup - cooldown
    parts = [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr),
             optax.linear_schedule(lr, end, max(cooldown, 1)), optax.constant_schedule(end)]
    return optax.join_schedules(parts, [warmup, warmup + stable, total])


# Weight decay by a parameter's role, read from its name, never from its rank: stacked
# (scanned) layers give every bias, norm scale and modulation table a leading `layers`
# axis, so "ndim >= 2" decays them all. Matmul / conv kernels, embedding tables and LoRA
# factors are decayed; biases, norm scales, adaLN modulation tables, learned null tokens and
# slot / position embeddings are not (pulling them to 0 changes what "absent" means).
DECAYED_NAMES = frozenset({"kernel", "embedding", "lora_a", "lora_b"})


def _leaf_name(path) -> str:
    names = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)]
    return str(names[-1]) if names else ""


def decay_mask(params):
    """Same-structure tree of bools: True where AdamW's weight decay applies."""
    return jax.tree_util.tree_map_with_path(lambda path, _: _leaf_name(path) in DECAYED_NAMES, params)


def make_optimizer(cfg) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW with warmup + cosine, gradients clipped by global norm first."""
    schedule = learning_rate_schedule(cfg)
    tx = optax.chain(
        optax.clip_by_global_norm(float(cfg.clip_norm)),
        optax.adamw(schedule, b1=float(cfg.b1), b2=float(cfg.b2), eps=float(cfg.eps),
                    weight_decay=float(cfg.weight_decay), mask=decay_mask),
    )
    return tx, schedule


# ----------------------------------------------------------------------------- creation

def build_abstract(model_fn: Callable[[nnx.Rngs], nnx.Module], trainable: Any):
    """graphdef + abstract (params, frozen) without allocating anything."""
    # jax.eval_shape rather than nnx.eval_shape: the latter turns logical names into mesh
    # shardings when a mesh is installed, which logical names are not.
    box = {}

    def build():
        with nnx.use_eager_sharding(False):
            graphdef, params, frozen = nnx.split(model_fn(nnx.Rngs(0)), trainable, ...)
        box["graphdef"] = graphdef
        return params, frozen

    params, frozen = jax.eval_shape(build)
    return box["graphdef"], params, frozen


def _init_state(model_fn, trainable, tx, seed: int) -> TrainState:
    with nnx.use_eager_sharding(False):
        model = model_fn(nnx.Rngs(seed))
    _, params, frozen = nnx.split(model, trainable, ...)
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, frozen=frozen,
        opt_state=tx.init(params),
        ema=jax.tree.map(jnp.copy, params),
        rng=jax.random.key_data(jax.random.key(seed)).astype(jnp.uint32),
        bad_steps=jnp.zeros((), jnp.int32), skipped=jnp.zeros((), jnp.int32))


def abstract_state(model_fn, trainable, tx, seed: int = 0) -> TrainState:
    """ShapeDtypeStructs of the whole TrainState (for shardings, restore targets, lowering)."""
    return jax.eval_shape(lambda: _init_state(model_fn, trainable, tx, seed))


def state_shardings(abstract: TrainState, mesh: Mesh, rules) -> TrainState:
    """NamedShardings for every leaf: params/EMA/moments by their logical names."""
    rep = NamedSharding(mesh, P())
    return TrainState(
        step=rep, params=mesh_lib.state_shardings(abstract.params, mesh, rules),
        frozen=mesh_lib.state_shardings(abstract.frozen, mesh, rules),
        opt_state=mesh_lib.state_shardings(abstract.opt_state, mesh, rules),
        ema=mesh_lib.state_shardings(abstract.ema, mesh, rules),
        rng=rep, bad_steps=rep, skipped=rep)


def with_shardings(abstract: TrainState, shardings: TrainState) -> TrainState:
    """ShapeDtypeStructs carrying their target sharding (an orbax restore target)."""
    return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                        abstract, shardings)


def create_state(model_fn, trainable, tx, shardings: TrainState, seed: int) -> TrainState:
    """Initialise directly into the sharded layout (no full copy on any one device)."""
    init = jax.jit(lambda: _init_state(model_fn, trainable, tx, seed), out_shardings=shardings)
    return init()


def count_params(tree) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))
