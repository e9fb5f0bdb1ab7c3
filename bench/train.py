"""Training-step speed: step time, tokens/s and MFU of the full jitted train step.

    python bench/train.py [--repeats 5] [--rows mmdit-tiny,mmdit-tiny-remat,mmdit-small,vae-tiny]

The timed thing is the whole `trainer.setup(...).step` (forward, backward, clipping, AdamW,
EMA, guard) on the batches the objective really trains on, one jit call per step, state
donated. Each figure is the median of `--repeats` steps after one warm-up step.

MFU = model FLOPs per step / step time / (peak FLOP/s x devices), where the peak is a
float32 1024^2 matmul measured first in this same process (the CPU roofline stand-in; on
an accelerator pass --peak to use the card's bf16 dense peak instead). Model FLOPs are
the analytic count (MMDiT: 6 x params x tokens + 12 x layers x tokens^2 x width; VAE: XLA's
forward count x 3). The MMDiT count follows EVAL.md and overcounts a two-stream model
(each token only meets its own stream's weights), so its MFU is an upper-side estimate.
"XLA/model" is XLA's own count of the compiled step over the model count; XLA counts the
body of a `lax.scan` once, not once per layer, so it falls with depth (scanned blocks) and
is a sanity column, not a FLOP count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "configs"))

import omnihuman  # noqa: E402
import vae as vae_config  # noqa: E402

from omnijax.train import state as state_lib  # noqa: E402
from omnijax.train import trainer  # noqa: E402


def _row_config(name: str):
    if name.startswith("mmdit"):
        size = name.split("-")[1]
        c = omnihuman.get_config(f"size={size}")
        c.data.update(latent_frames=3, latent_height=8, latent_width=8, text_len=32)
        c.train.update(batch_size=8 if size == "tiny" else 2)
        c.objective_opts.motion_prob = 0.0
        if name.endswith("remat"):
            c.train.remat = "nothing_saveable"
    else:
        c = vae_config.get_config("size=tiny,frames=9,res=32")
        c.train.batch_size = 4
    c.train.compute_dtype = "float32"          # CPU: no fast bf16
    c.mesh.shape = dict(data=1, fsdp=-1, context=1, tensor=1)
    c.observe.peak_flops = 1.0                   # the loop's own peak is not used here
    return c


def bench_row(name: str, repeats: int, peak: float) -> dict:
    cfg = _row_config(name)
    su = trainer.setup(cfg)
    obj = su.objective
    data = obj.make_data(cfg, su.mesh)
    batches = [su.global_batch(next(data)) for _ in range(repeats + 1)]
    state = su.init_state(0)
    abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=su.batch_shardings[k])
                      for k, v in su.batch_spec.items()}
    compiled, info = trainer.compile_step(su.step, su.target, abstract_batch)
    state, m = compiled(state, batches[0])
    jax.block_until_ready(m)
    times = []
    for b in batches[1:]:
        t0 = time.perf_counter()
        state, m = compiled(state, b)
        jax.block_until_ready((state, m))
        times.append(time.perf_counter() - t0)
    dt = statistics.median(times)
    B = int(cfg.train.batch_size)
    flops = su.flops_per_example * B
    attn = "-"
    remat = "-"
    if hasattr(obj, "model_config") and hasattr(obj.model_config, "attention"):
        from omnijax.models.attention import resolve
        mc = obj.model_config
        attn = resolve(mc.attention, np.dtype(mc.dtype), mc.head_dim)
        remat = mc.remat
    return dict(row=name, params=state_lib.count_params(su.abstract.params), batch=B,
                tokens=obj.tokens_per_example() * B, attention=attn, remat=remat,
                compile_s=info["compile_s"], step_ms=1e3 * dt,
                tokens_per_s=obj.tokens_per_example() * B / dt,
                gflops=flops / dt / 1e9, mfu=flops / dt / (peak * jax.device_count()),
                xla_ratio=info.get("xla_flops", 0.0) / flops if flops else float("nan"),
                temp_mb=info.get("temp_size_in_bytes", 0) / 2**20,
                loss=float(m["loss"]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rows", default="mmdit-tiny,mmdit-tiny-remat,mmdit-small,vae-tiny")
    p.add_argument("--peak", type=float, default=0.0, help="peak FLOP/s per device (0: measure)")
    a = p.parse_args(argv)
    peak = a.peak or trainer.measured_matmul_peak(1024, 7)
    print(f"# {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}; "
          f"peak {'given' if a.peak else 'measured f32 1024^2 matmul'}: {peak / 1e9:.1f} GFLOP/s/device")
    rows = []
    for name in a.rows.split(","):
        rows.append(bench_row(name, a.repeats, peak))
        r = rows[-1]
        print(f"  done {name}: {r['step_ms']:.1f} ms/step", file=sys.stderr, flush=True)
    cols = ["row", "params", "batch", "tokens", "attention", "remat", "compile_s", "step_ms",
            "tokens_per_s", "gflops", "mfu", "xla_ratio", "temp_mb"]
    heads = ["row", "params", "B", "tokens/step", "attention", "remat", "compile s", "step ms",
             "tokens/s", "GFLOP/s", "MFU", "XLA/model FLOPs", "XLA temp MiB"]
    print("| " + " | ".join(heads) + " |")
    print("|" + "---|" * len(heads))
    for r in rows:
        vals = []
        for c in cols:
            v = r[c]
            if c == "params":
                vals.append(f"{v:,}")
            elif c == "mfu":
                vals.append(f"{100 * v:.1f}%")
            elif isinstance(v, float):
                vals.append(f"{v:.3g}" if c != "tokens_per_s" else f"{v:,.0f}")
            else:
                vals.append(str(v))
        print("| " + " | ".join(vals) + " |")
    base = rows[0]
    for r in rows[1:]:
        if r["row"].startswith("mmdit-tiny"):
            print(f"# {r['row']} / {base['row']} step time: {r['step_ms'] / base['step_ms']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
