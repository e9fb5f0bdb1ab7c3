"""A small real NNX model + objective for the trainer's machinery tests (not a test file).

Two linear layers with logical axis names (so fsdp/tensor sharding applies), a teacher to
regress onto, and input noise drawn from the step rng (so rng handling is exercised).
Compiles in about a second, which keeps the multi-process and kill -9 tests inside budget;
the MMDiT and VAE objectives have their own tests.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from omnijax.data import synthetic_batches
from omnijax.models.partitioning import param_init
from omnijax.train import config_lib, inputs, objectives

DIN, HIDDEN, DOUT = 16, 32, 8


class ToyNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        self.up = nnx.Linear(DIN, HIDDEN, kernel_init=param_init(init, "embed", "mlp"),
                             bias_init=param_init(nnx.initializers.zeros_init(), "mlp"), rngs=rngs)
        self.down = nnx.Linear(HIDDEN, DOUT, kernel_init=param_init(init, "mlp", "embed"),
                               bias_init=param_init(nnx.initializers.zeros_init(), "embed"), rngs=rngs)

    def __call__(self, x):
        return self.down(jnp.tanh(self.up(x)))


class ToyObjective:
    name = "toy"
    breakdowns: dict = {}

    def __init__(self, cfg):
        self.cfg = cfg
        self.trainable = objectives.trainable_filter(cfg)
        self.teacher = np.random.default_rng(123).standard_normal((DIN, DOUT)).astype(np.float32)

    def base_model_fn(self, rngs):
        return ToyNet(rngs)

    def model_fn(self, rngs):
        return objectives.lora_wrap(ToyNet(rngs), self.cfg, rngs)

    def batch_spec(self, B):
        return {"x": jax.ShapeDtypeStruct((B, DIN), jnp.float32),
                "y": jax.ShapeDtypeStruct((B, DOUT), jnp.float32)}

    def loss(self, model, batch, rng):
        x = batch["x"] + float(self.cfg.data.noise) * jax.random.normal(rng, batch["x"].shape)
        err = model(x).astype(jnp.float32) - batch["y"]
        return jnp.mean(err ** 2), {"abs_err": jnp.abs(err).mean()}

    def make_batch(self, index: int, B: int) -> dict[str, np.ndarray]:
        r = np.random.default_rng([int(self.cfg.data.seed), index])
        x = r.standard_normal((B, DIN)).astype(np.float32)
        return {"x": x, "y": np.tanh(x @ self.teacher)}

    def make_data(self, cfg, mesh):
        B = int(cfg.train.batch_size)
        delay = float(cfg.data.delay_s)

        def make(i):
            time.sleep(delay)   # lets the kill -9 test land mid-run
            return self.make_batch(i, B)
        return synthetic_batches.IndexedBatches(make, inputs.process_rows(cfg, mesh),
                                                tuple(cfg.data.get("inject_nan_at", ())), "x")

    def tokens_per_example(self):
        return 1

    def flops_per_example(self):
        return 6.0 * (DIN * HIDDEN + HIDDEN * DOUT)


def toy_config(**train) -> ml_collections.ConfigDict:
    c = config_lib.base()
    c.objective = "train_toy:ToyObjective"
    c.model = dict(size="toy")
    c.data = dict(seed=0, inject_nan_at=(), noise=0.01, delay_s=0.0)
    c.train.update(steps=8, batch_size=8, compute_dtype="float32", log_every=1, max_bad_steps=3)
    c.train.update(**train)
    c.optim.update(lr=1e-2, warmup_steps=2, decay_steps=20, ema_decay=0.9)
    c.checkpoint.update(every=2, keep=10)
    c.lora.targets = ("up$", "down$")
    c.observe.peak_flops = 1e9   # skip the matmul measurement
    return c


CONFIG_FILE = '''
import sys, os
sys.path.insert(0, {tests!r})
import train_toy

def get_config(arg=None):
    c = train_toy.toy_config()
    for item in filter(None, (arg or "").split(",")):
        k, v = item.split("=")
        section, key = k.split(".")
        c[section][key] = type(c[section][key])(v)
    return c
'''


def write_config_file(path, tests_dir: str) -> str:
    """A config file for `python -m omnijax.train` that builds `toy_config()`."""
    path.write_text(CONFIG_FILE.format(tests=tests_dir))
    return str(path)
