"""`python -m omnijax.train --config=configs/<file>.py:<args> --workdir=DIR [--config.x=y ...]`.

The same as `omnijax train ...`. Multi-process: every process runs this same command;
`jax.distributed.initialize` is called from the environment (launch/*.sh set it up):
    JAX_COORDINATOR_ADDRESS=host:port JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i   (explicit), or
    a TPU pod / SLURM allocation (auto-detected by jax when --distributed=auto).
Exit status: 0 done, 3 stopped by SIGTERM/SIGINT after checkpointing (rerun to resume),
4 stopped by the non-finite guard (the latest checkpoint is the last good state).
"""

from __future__ import annotations

import logging
import os
import sys

from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "config file, e.g. configs/omnihuman.py:size=tiny,stage=1",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "run directory (local, gs:// or s3://): checkpoints, logs")
flags.DEFINE_enum("distributed", "auto", ["auto", "env", "off"],
                  "auto: initialize when the env names a coordinator or a TPU pod / SLURM job; "
                  "env: require JAX_COORDINATOR_ADDRESS; off: single process")


def init_distributed(mode: str) -> None:
    """`jax.distributed.initialize` from the environment (before any device is touched)."""
    import jax
    env = os.environ
    if mode == "off":
        return
    if "JAX_COORDINATOR_ADDRESS" in env:
        n = int(env.get("JAX_NUM_PROCESSES", "1"))
        if env.get("JAX_PLATFORMS", "").startswith("cpu") and n > 1:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                                   num_processes=n, process_id=int(env["JAX_PROCESS_ID"]))
    elif mode == "env":
        raise RuntimeError("--distributed=env needs JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES "
                           "and JAX_PROCESS_ID in the environment")
    elif int(env.get("SLURM_NTASKS", "1")) > 1 or "TPU_WORKER_HOSTNAMES" in env \
            or "MEGASCALE_COORDINATOR_ADDRESS" in env:
        jax.distributed.initialize()   # cluster auto-detection (SLURM, Cloud TPU)


def main(argv: list[str] | None = None) -> int:
    argv = ["omnijax train"] + list(sys.argv[1:] if argv is None else argv)
    # ml_collections finds the --config.x=y overrides by scanning sys.argv, so parse with
    # sys.argv set to what we parse (main() is also called in-process by the CLI and tests).
    saved, sys.argv = sys.argv, argv
    try:
        FLAGS(argv)
    finally:
        sys.argv = saved
    if FLAGS.config is None or not FLAGS.workdir:
        print("usage: python -m omnijax.train --config=configs/omnihuman.py:size=tiny,stage=1 "
              "--workdir=DIR [--config.train.steps=100 ...]", file=sys.stderr)
        return 2
    init_distributed(FLAGS.distributed)
    import jax
    logging.basicConfig(
        level=logging.INFO if jax.process_index() == 0 else logging.WARNING,
        format=f"%(asctime)s p{jax.process_index()} %(name)s: %(message)s")
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from omnijax.train import trainer
    return trainer.train(FLAGS.config, FLAGS.workdir)
