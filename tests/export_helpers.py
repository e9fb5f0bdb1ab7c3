"""Training runs made without training (a real checkpoint of random weights), for the
export / sample / eval tests: compiling a train step would cost a minute per test module."""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))


def tiny_mmdit_config(**model):
    import omnihuman
    args = ",".join(f"{k}={v}" for k, v in {"depth": 1, **model}.items())
    cfg = omnihuman.get_config(f"size=tiny,stage=3,{args}")
    cfg.data.update(latent_height=4, latent_width=4)    # 32 x 32 video, 17 frames a segment
    cfg.train.batch_size = 2
    return cfg


def fake_run(workdir, cfg, *, step: int = 10, seed: int = 0) -> str:
    """A workdir with one checkpoint: EMA = a fully random MMDiT / VAE, params = EMA + noise
    (so a test can tell which one an export took)."""
    from omnijax.train import checkpoint as ckpt_lib
    from omnijax.train import trainer

    su = trainer.setup(cfg, devices=jax.devices()[:1])
    state = su.init_state(0)
    if cfg.objective == "mmdit":
        from omnijax.models.mmdit import random_mmdit
        live = random_mmdit(su.objective.model_config, seed=seed)
    else:
        from omnijax.models.vae import CausalVAE
        live = CausalVAE(su.objective.model_config, rngs=nnx.Rngs(seed))
    values = {tuple(p): v.get_value() for p, v in nnx.state(live, nnx.Param).flat_state()}
    rng = np.random.default_rng(seed + 1)

    def fill(tree):
        """Random weights by path (a LoRA backbone's `.../base/kernel` is `.../kernel`);
        LoRA factors random too, so merging them changes the kernels."""
        flat = []
        for path, var in tree.flat_state():
            key = tuple(p for p in path if p != "base")
            old = var.get_value()
            new = values[key] if key in values else 0.1 * rng.normal(size=old.shape)
            flat.append((path, var.replace(jax.device_put(np.asarray(new, old.dtype), old.sharding))))
        return nnx.State.from_flat_path(flat)

    ema = fill(state.ema)
    params = jax.tree.map(lambda e: e + 0.05, ema)
    state = state.replace(ema=ema, params=params, frozen=fill(state.frozen),
                          step=jax.numpy.asarray(step, jax.numpy.int32))
    config = cfg.to_dict()
    config["recipe"] = su.objective.recipe()
    ck = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    ck.save(step, state.as_dict(), None, config)
    ck.close()
    return str(workdir)
