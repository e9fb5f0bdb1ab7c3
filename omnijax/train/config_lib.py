"""What the config files share: the `k=v,...` arg they take and the keys every job has.

A config file (configs/*.py) is loaded by path (`--config=configs/omnihuman.py:size=tiny`),
so it cannot import a sibling module; it imports this one like any other library module.

    parse_arg("size=tiny,stage=2", defaults, choices=...)   the arg, typed and checked
    base()                                                  mesh, optimizer, train loop,
                                                            checkpoints, LoRA, observability

A bad arg raises ValueError naming the key and what was expected; `omnijax train` turns it
into one line and exit status 2.
"""

from __future__ import annotations

import difflib
from typing import Any, Collection, Mapping

import ml_collections


def cast_like(key: str, value: str, default: Any) -> Any:
    """`value` (from the command line) as the type of `default`; tuples as `2x2`."""
    if isinstance(default, tuple):
        try:
            return tuple(type(d)(v) for d, v in zip(default, value.split("x"), strict=True))
        except ValueError:
            raise ValueError(f"config arg {key}={value!r}: expected {len(default)} values "
                             f"like {'x'.join(map(str, default))}") from None
    if isinstance(default, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"config arg {key}={value!r}: expected true or false")
    for kind, name in ((int, "an integer"), (float, "a number")):
        if isinstance(default, kind):
            try:
                return kind(value)
            except ValueError:
                raise ValueError(f"config arg {key}={value!r}: expected {name}") from None
    return value


def parse_arg(arg: str | None, defaults: Mapping[str, Any], *,
              choices: Mapping[str, Collection[Any]] | None = None,
              optional: Mapping[str, Any] | None = None,
              optional_help: str = "") -> dict[str, Any]:
    """'k=v,k2=v2' -> {k: v} over `defaults`, each value cast to its default's type.

    `choices[k]`: the values k may take. `optional`: further keys a file accepts with the
    defaults that type them (e.g. a model config's fields), in the result only when given;
    `optional_help` names them in the error for an unknown key.
    """
    extra = dict(optional or {})
    out = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        if "=" not in item:
            raise ValueError(f"config arg {item!r} must look like key=value (got {arg!r})")
        key, value = item.split("=", 1)
        if key in defaults:
            out[key] = cast_like(key, value, defaults[key])
        elif key in extra:
            out[key] = cast_like(key, value, extra[key])
        else:
            known = list(defaults) + sorted(extra)
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown config arg {key!r}{hint}; known: "
                             f"{', '.join(defaults)}{optional_help}")
    for key, allowed in (choices or {}).items():
        if out[key] not in allowed:
            raise ValueError(f"config arg {key}={out[key]!r}: expected one of "
                             f"{', '.join(map(str, allowed))}")
    return out


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # mesh: sizes per axis (-1 = the devices left over) and logical-axis rule overrides,
    # e.g. --config.mesh.shape.tensor=2 for FSDP x TP; rules as {logical: mesh axes}.
    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = dict(data=1, fsdp=-1, context=1, tensor=1)
    # devices: 0 = every device; N = only the first N (one process), e.g. a batch that
    # the whole host cannot split
    c.mesh.devices = 0
    c.mesh.rules = ml_collections.ConfigDict()

    c.optim = ml_collections.ConfigDict(dict(
        lr=1e-4, warmup_steps=100, decay_steps=10_000, final_lr_ratio=0.1,
        schedule="cosine", cooldown_steps=0,   # wsd: constant, then linear over the last cooldown_steps
        b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.01, clip_norm=1.0, ema_decay=0.999,
        ema_warmup=True))   # EMA decay min(ema_decay, (1 + n) / (10 + n)) at update n

    c.train = ml_collections.ConfigDict(dict(
        steps=10_000, batch_size=8, microbatches=1,
        compute_dtype="bfloat16",      # f32 master weights, matmuls in this dtype
        remat="none",                  # none | nothing_saveable | dots_saveable | ...
        seed=0, log_every=10,
        max_bad_steps=5,               # non-finite steps in a row before the run stops
        max_minutes=0.0))              # > 0: stop (checkpointed, exit 0) after this wall time

    c.checkpoint = ml_collections.ConfigDict(dict(every=500, keep=3, async_save=True))
    c.init_from = ""                   # previous stage's workdir: load params + EMA only
    c.lora = ml_collections.ConfigDict(dict(rank=0, alpha=64.0, targets=(
        r"blocks/(visual|text)/(q|k|v|out|mlp_in|mlp_out)$",)))
    # peak_flops 0: the accelerator's bf16 spec, or a measured matmul on CPU. logdir "":
    # the workdir (TensorBoard events + metrics.jsonl), or ./logs/<name> for gs:// / s3://.
    c.observe = ml_collections.ConfigDict(dict(peak_flops=0.0, logdir=""))
    return c
