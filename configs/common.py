"""Pieces shared by the config files (not a config file itself).

`parse_arg("size=tiny,stage=2")` -> {"size": "tiny", "stage": "2"}; `base()` -> the keys
every job has (mesh, optimizer, train loop, checkpoints, observability).
"""

from __future__ import annotations

import ml_collections


def parse_arg(arg: str | None, known: dict[str, object]) -> dict[str, object]:
    """'k=v,k2=v2' -> dict with values cast to the type of `known[k]` (unknown keys kept as str)."""
    out = dict(known)
    for item in filter(None, (arg or "").split(",")):
        if "=" not in item:
            raise ValueError(f"config arg {item!r} must look like key=value (got {arg!r})")
        k, v = item.split("=", 1)
        default = known.get(k)
        if isinstance(default, bool):
            out[k] = v.lower() in ("1", "true", "yes", "on")
        elif isinstance(default, int):
            out[k] = int(v)
        elif isinstance(default, float):
            out[k] = float(v)
        else:
            out[k] = v
    return out


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    # mesh: sizes per axis (-1 = the devices left over) and logical-axis rule overrides,
    # e.g. --config.mesh.shape.tensor=2 for FSDP x TP; rules as {logical: mesh axes}.
    c.mesh = ml_collections.ConfigDict()
    c.mesh.shape = dict(data=1, fsdp=-1, context=1, tensor=1)
    c.mesh.rules = ml_collections.ConfigDict()

    c.optim = ml_collections.ConfigDict(dict(
        lr=1e-4, warmup_steps=100, decay_steps=10_000, final_lr_ratio=0.1,
        b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.01, clip_norm=1.0, ema_decay=0.999,
        ema_warmup=True))   # EMA decay min(ema_decay, (1 + n) / (10 + n)) at update n

    c.train = ml_collections.ConfigDict(dict(
        steps=10_000, batch_size=8, microbatches=1,
        compute_dtype="bfloat16",      # f32 master weights, matmuls in this dtype
        remat="none",                  # none | nothing_saveable | dots_saveable | ...
        seed=0, log_every=10,
        max_bad_steps=5))              # non-finite steps in a row before the run stops

    c.checkpoint = ml_collections.ConfigDict(dict(every=500, keep=3, async_save=True))
    c.init_from = ""                   # previous stage's workdir: load params + EMA only
    c.lora = ml_collections.ConfigDict(dict(rank=0, alpha=64.0, targets=(
        r"blocks/(visual|text)/(q|k|v|out|mlp_in|mlp_out)$",)))
    # peak_flops 0: the accelerator's bf16 spec, or a measured matmul on CPU. logdir "":
    # the workdir (TensorBoard events + metrics.jsonl), or ./logs/<name> for gs:// / s3://.
    c.observe = ml_collections.ConfigDict(dict(peak_flops=0.0, logdir=""))
    return c
