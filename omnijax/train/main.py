"""`omnijax train` / `python -m omnijax.train`: run or resume a training job (USAGE below).

Every argument is checked before anything is written: the config file and its arg, each
`--config.key=value` override, the objective it builds and the mesh it asks for. A mistake
raises `UsageError` (one line naming the argument, exit status 2, nothing under
`--workdir`); everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, Sequence

from absl import flags
from ml_collections import ConfigDict, config_flags

from omnijax.errors import UsageError, require_file

USAGE = """\
usage: omnijax train --config=FILE[:ARGS] --workdir=DIR [--config.KEY=VALUE ...]
                     [--distributed=auto|env|off]
       python -m omnijax.train ...   (the same arguments)

Train the causal VAE or the MMDiT. Rerunning the same command resumes from the latest
checkpoint in DIR; every process of a multi-host job runs the same command.

flags:
  --config=FILE[:ARGS]  an ml_collections config file; its get_config(ARGS) builds the job.
                        ARGS is key=value,key=value (keys: below, and each file's docstring)
  --config.KEY=VALUE    override one key of the built config (after --config), parsed as
                        the key's type: --config.train.steps=100 --config.data.path=data/cache
  --workdir=DIR         run directory (local, gs:// or s3://): checkpoints, config.json,
                        TensorBoard events, metrics.jsonl
  --distributed=MODE    auto (default): jax.distributed.initialize when the environment
                        names a coordinator, a TPU pod or a SLURM job; env: require
                        JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID; off: one process
  -h, --help            this text

config files:
  configs/omnihuman.py  the MMDiT with the omni-conditions curriculum: size=tiny|small|base|large,
                        stage=1|2|3, data=synthetic|shards, lora=RANK, any MMDiTConfig field
  configs/vae.py        the causal VAE on SynthTalk clips: size=tiny|small|wan21,
                        frames=1+4k, res=a multiple of 8

examples:
  omnijax train --config=configs/omnihuman.py:size=tiny,stage=1 --workdir=runs/s1
  omnijax train --config=configs/omnihuman.py:size=tiny,stage=2 --workdir=runs/s2 \\
      --config.init_from=runs/s1 --config.curriculum.ratios.audio=0.3

exit status:
  0  done: train.steps reached, final checkpoint written
  2  usage error: a bad flag, config arg, config key or value (one line on stderr,
     nothing written)
  3  stopped by SIGTERM/SIGINT after checkpointing: rerun the same command to resume
  4  stopped by the non-finite guard: the latest checkpoint is the last good state
"""

HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull")
_SEE_HELP = "see `omnijax train --help`"
_CONFIG_EXAMPLE = "--config=configs/omnihuman.py:size=tiny,stage=1"
# absl parser flag_type() -> words for "expected ..." (other parsers' errors say it themselves)
_KINDS = {"int": "an integer", "float": "a number", "bool": "true or false"}


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _innermost(e: BaseException) -> BaseException:
    """The exception that started a chain (config_flags and absl re-raise what a config
    file raised, wrapped twice); `raise ... from None` ends the chain where it says."""
    while True:
        nxt = e.__cause__ if e.__cause__ is not None else (
            None if e.__suppress_context__ else e.__context__)
        if nxt is None:
            return e
        e = nxt


def _flag_values(argv: list[str]) -> flags.FlagValues:
    """A fresh FlagValues per call: main() is also called in-process (CLI, notebooks, tests),
    and config_flags defines one flag per `--config.key` override as it parses."""
    fv = flags.FlagValues()
    # sys_argv: config_flags finds the overrides by scanning argv, not only what it parses
    config_flags.DEFINE_config_file("config", None, f"config file, e.g. {_CONFIG_EXAMPLE}",
                                    flag_values=fv, lock_config=True, sys_argv=argv)
    flags.DEFINE_string("workdir", None, "run directory (local, gs:// or s3://)", flag_values=fv)
    flags.DEFINE_enum("distributed", "auto", ["auto", "env", "off"],
                      "auto | env | off (see --help)", flag_values=fv)
    return fv


def _config_spec(argv: Sequence[str]) -> str | None:
    """The value of --config in argv (`--config=X` or `--config X`), None if absent."""
    for i, a in enumerate(argv):
        m = re.match(r"^--?config(=(.*))?$", a)
        if m:
            if m.group(1) is not None:
                return m.group(2)
            return argv[i + 1] if i + 1 < len(argv) else ""
    return None


def _override_paths(argv: Sequence[str]) -> list[str]:
    return [re.sub(r"^--?(no)?config\.", "", a.split("=", 1)[0])
            for a in argv if re.match(r"^--?(no)?config\.", a)]


def _explain(e: Exception, fv: flags.FlagValues, argv: Sequence[str], spec: str) -> UsageError | None:
    """The UsageError a parse failure stands for, or None when it is a bug (a config file
    that crashed), which keeps its traceback."""
    if isinstance(e, flags.UnrecognizedFlagError):
        m = re.search(r"Did you mean: (.*?) ?\?", str(e))
        hint = f" (did you mean --{m.group(1).split(',')[0].strip()}?)" if m else ""
        return UsageError(f"unknown flag --{e.flagname}{hint}; {_SEE_HELP}")
    if isinstance(e, flags.IllegalFlagValueError):
        m = re.match(r"flag --([^=]+)=(.*?): ", str(e), re.S)
        name = m.group(1) if m else "config"
        if name == "config":   # what get_config(ARGS) raised; a ValueError is a bad ARGS
            first = _innermost(e)
            if not isinstance(first, ValueError):
                return None
            return UsageError(f"--config={spec}: {_one_line(first)}")
        flag = fv[name] if name in fv else None
        kind = flag.parser.flag_type() if flag is not None and name.startswith("config.") else ""
        kind = _KINDS.get(kind, "")
        expected = f"expected {kind} (the key's type): " if kind else ""
        return UsageError(f"--{name}={m.group(2) if m else ''}: {expected}"
                          f"{_one_line(str(e)[m.end():] if m else e)}")
    if isinstance(e, (KeyError, AttributeError)):
        # config_path raises these for an override of a key the config does not have
        first = _innermost(e)
        key = first.args[0] if isinstance(first, KeyError) and first.args else None
        lookup = re.search(r"Attempting to lookup: (\S+)", str(first.args[0] if first.args else ""))
        if lookup and lookup.group(1) in _override_paths(argv):   # a key below a plain value
            return UsageError(f"--config.{lookup.group(1)}: {_one_line(first.args[0])}")
        paths = [p for p in _override_paths(argv) if key in p.split(".")]
        if not paths:
            return None
        m = re.search(r'Did you mean "([^"]+)"', str(e)) or re.search(r'Did you mean "([^"]+)"', repr(e))
        hint = f" (did you mean {m.group(1)!r}?)" if m else ""
        return UsageError(f"--config.{paths[0]}: the config built by {spec} has no key {key!r}{hint}")
    if isinstance(e, flags.Error):   # FlagOrderError, unsupported override types, ...
        return UsageError(f"{_one_line(e)}; {_SEE_HELP}")
    return None


def parse_args(argv: Sequence[str]) -> tuple[ConfigDict, str, str]:
    """Command-line arguments (no program name) -> (config, workdir, distributed mode).

    Raises UsageError for anything a user got wrong; reads the config file, writes nothing.
    """
    argv = ["omnijax train", *argv]
    spec = _config_spec(argv[1:])
    if spec is None or not spec:
        raise UsageError(f"--config: no config file given (expected --config=FILE[:ARGS], "
                         f"e.g. {_CONFIG_EXAMPLE}); {_SEE_HELP}")
    require_file(spec.split(":", 1)[0], "--config file")
    fv = flags.FlagValues()
    try:
        fv = _flag_values(argv)   # reads argv already (--flagfile=...)
        rest = fv(argv)
    except Exception as e:  # noqa: BLE001 - sorted into user mistakes and bugs by _explain
        err = _explain(e, fv, argv, spec)
        if err is None:
            raise
        raise err from e
    if len(rest) > 1:
        raise UsageError(f"unexpected argument {rest[1]!r} (flags look like --workdir=DIR); {_SEE_HELP}")
    config = fv.config
    if not isinstance(config, ConfigDict):
        error = getattr(config, "_error", None)   # config_flags' stand-in for an unreadable file
        raise UsageError(f"--config={spec}: " + (_one_line(error) if error else
                         f"get_config() returned {type(config).__name__}, expected a ConfigDict"))
    if not fv.workdir:
        raise UsageError(f"--workdir: no run directory given (expected --workdir=DIR); {_SEE_HELP}")
    return config, fv.workdir, fv.distributed


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
        raise UsageError("--distributed=env needs JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES "
                         "and JAX_PROCESS_ID in the environment")
    elif int(env.get("SLURM_NTASKS", "1")) > 1 or "TPU_WORKER_HOSTNAMES" in env \
            or "MEGASCALE_COORDINATOR_ADDRESS" in env:
        jax.distributed.initialize()   # cluster auto-detection (SLURM, Cloud TPU)


def validate(cfg: ConfigDict):
    """The objective `cfg` describes, with the mesh it asks for checked against the devices
    (after `init_distributed`: the device count is the job's). ValueError -> UsageError."""
    import jax

    from omnijax.models import partitioning
    from omnijax.train import mesh as mesh_lib
    from omnijax.train import objectives
    try:
        objective = objectives.build(cfg)
        partitioning.mesh_shape(dict(cfg.mesh.shape), jax.device_count())
        mesh_lib.rules_from_config(cfg.mesh.get("rules"))
    except ValueError as e:
        raise UsageError(f"config: {_one_line(e)}") from e
    return objective


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in HELP_FLAGS for a in argv):
        print(USAGE, end="")
        return 0
    cfg, workdir, distributed = parse_args(argv)
    # libraries that read absl's global flags (grain workers, absl logging in orbax) see
    # their defaults; ours were parsed into their own FlagValues
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    init_distributed(distributed)
    import jax
    logging.basicConfig(
        level=logging.INFO if jax.process_index() == 0 else logging.WARNING,
        format=f"%(asctime)s p{jax.process_index()} %(name)s: %(message)s")
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    objective = validate(cfg)
    from omnijax.train import trainer
    return trainer.train(cfg, workdir, objective)
