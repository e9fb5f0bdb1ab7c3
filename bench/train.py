"""Training speed: the bare jitted train step, and the real loop at its default settings.

    python bench/train.py [--repeats 5] [--rows mmdit-tiny,mmdit-tiny-nomotion,mmdit-tiny-remat,mmdit-small,vae-tiny,vae-demo,vae-demo-plain]
                          [--loop-steps 300]

Bare rows time the whole `trainer.setup(...).step` (forward, backward, clipping, AdamW,
EMA, guard) on the batches the objective really trains on, one jit call per step, state
donated; each figure is the median of `--repeats` steps after one warm-up step. Rows use
the configs' defaults (`configs/omnihuman.py:size=...`: motion_prob 0.25 with 2-frame
prefixes) except `-nomotion` (motion_prob 0) and `-remat`. The cost of the prefix, motion_prob
0.25 over 0, is timed apart: both steps streamed (as below), interleaved three times.

Loop rows run `trainer.train` itself (`python -m omnijax.train`'s code path: data
iterator, host->device batches, the step, metrics, checkpoints every `checkpoint.every`,
TensorBoard) for `--loop-steps` steps of the tiny stage-3 config at its defaults, on
synthetic latents and on preprocessed shards (made here: `omnijax synth` + `omnijax
preprocess` into a temp dir); `-nockpt` saves only at the end (what the data path costs
without the periodic checkpoints). Their steps/s is the loop's own (`steps_per_s` in the run's
metrics.jsonl): the mean over every logging window after the first (compilation excluded,
checkpoint saves included: they are part of what a user's run pays). The peer is the bare
step *streamed*: the same compiled step dispatched back to back with batches already on the
device and one wait at the end (the throughput a loop with free data and no checkpoints
would reach), compiled once and timed between the loop rows: a row's peer is the mean of
the timings just before and just after it (they bracket the machine's drift). "of bare
step" = loop steps/s / bare streamed steps/s.

MFU = model FLOPs per step / step time / (peak FLOP/s x devices), where the peak is a
float32 1024^2 matmul measured first in this same process (the CPU roofline stand-in; on
an accelerator pass --peak to use the card's bf16 dense peak instead). Model FLOPs are
the trainer's own count (MMDiT: `flops.mmdit_forward_flops` x 3, each weight charged for
the tokens it meets, plus attention; VAE: XLA's forward count x 3).
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
        c = omnihuman.get_config(f"size={size},stage=3")
        if size != "tiny":
            c.train.update(batch_size=2)
        if name.endswith("nomotion"):
            c.objective_opts.motion_prob = 0.0
        if name.endswith("remat"):
            c.train.remat = "nothing_saveable"
    elif name.startswith("vae-demo"):
        # the demo recipe's VAE step (2 x 17 x 64 x 64, motion-weighted); -plain: motion_weight 0
        from omnijax import demo
        c = demo.vae_train_config(demo.load_recipe(False, None))
        if name.endswith("plain"):
            c.objective_opts.motion_weight = 0.0
    else:
        c = vae_config.get_config("size=tiny,frames=9,res=32")
        c.train.batch_size = 4
    c.train.compute_dtype = "float32"          # CPU: no fast bf16
    c.mesh.shape = dict(data=1, fsdp=-1, context=1, tensor=1)
    c.observe.peak_flops = 1.0                   # the loop's own peak is not used here
    return c


def compiled_step(cfg, batches: int):
    """-> (setup, compiled step, fresh state, `batches` batches on the device, compile info)."""
    su = trainer.setup(cfg)
    data = su.objective.make_data(cfg, su.mesh)
    on_device = [su.global_batch(next(data)) for _ in range(batches)]
    abstract_batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=su.batch_shardings[k])
                      for k, v in su.batch_spec.items()}
    compiled, info = trainer.compile_step(su.step, su.target, abstract_batch)
    return su, compiled, su.init_state(0), on_device, info


def bench_row(name: str, repeats: int, peak: float) -> dict:
    cfg = _row_config(name)
    su, compiled, state, batches, info = compiled_step(cfg, repeats + 1)
    obj = su.objective
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


def _loop_steps_per_s(workdir: str) -> float:
    """Steps over seconds of every logged window after the first (which holds the compile)."""
    import json
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    rows = [r for r in rows if "steps_per_s" in r]
    steps = [r["step"] for r in rows]
    seconds = sum((b - a) / r["steps_per_s"] for a, b, r in zip(steps, steps[1:], rows[1:]))
    return (steps[-1] - steps[0]) / seconds


class BareStream:
    """A bench row's step (`_row_config`: tiny stage 3 at its defaults unless named otherwise),
    compiled once; `ms()` times `steps` of it dispatched back to back, batches on the device
    beforehand, one wait at the end."""

    def __init__(self, row: str = "mmdit-tiny", steps: int = 40):
        _, self.compiled, self.state, self.batches, _ = compiled_step(_row_config(row), steps)
        self.ms()                                              # warm-up

    def ms(self) -> float:
        state, m = self.state, None
        t0 = time.perf_counter()
        for b in self.batches:
            state, m = self.compiled(state, b)
        jax.block_until_ready((state, m))
        self.state = state
        return 1e3 * (time.perf_counter() - t0) / len(self.batches)


def _make_shards(root: str) -> str:
    from omnijax.data import preprocess, synthetic
    synthetic.generate(synthetic.SynthConfig(clips=8, seconds=3.0, size=64, seed=0), os.path.join(root, "synth"),
                       progress=False)
    cfg = preprocess.PreprocessConfig(buckets=("17x64x64",), stride=4, vae="tiny")
    preprocess.run(os.path.join(root, "synth", "clips"), os.path.join(root, "cache"), cfg, progress=False)
    return os.path.join(root, "cache")


def loop_row(name: str, steps: int, root: str, shards: str) -> dict:
    """`trainer.train` at the tiny stage-3 defaults; steps/s from its own metrics."""
    import logging
    logging.getLogger("omnijax").setLevel(logging.WARNING)
    source = name.split("-")[1]
    c = omnihuman.get_config(f"size=tiny,stage=3,data={source}")
    c.train.update(steps=steps, compute_dtype="float32")
    if name.endswith("-nockpt"):          # the data path's cost alone: one save, at the end
        c.checkpoint.every = 10 * steps
    c.observe.peak_flops = 1.0
    if source == "shards":
        c.data.update(path=shards, bucket="17x64x64")
    workdir = os.path.join(root, name)
    t0 = time.perf_counter()
    status = trainer.train(c, workdir)
    wall = time.perf_counter() - t0
    sps = _loop_steps_per_s(workdir)
    return dict(row=name, status=status, steps=steps, log_every=int(c.train.log_every),
                ckpt_every=int(c.checkpoint.every), steps_per_s=sps, step_ms=1e3 / sps, wall_s=wall)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rows", default="mmdit-tiny,mmdit-tiny-nomotion,mmdit-tiny-remat,mmdit-small,vae-tiny,"
                                     "vae-demo,vae-demo-plain")
    p.add_argument("--loop-steps", type=int, default=300, help="steps of each real-loop row (0: none)")
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
    by_name = {r["row"]: r for r in rows}
    if "mmdit-tiny" in by_name and "mmdit-tiny-nomotion" in by_name:
        # the rows above are medians of a few steps each, minutes apart; the ratio the
        # prefix costs is timed here streamed and interleaved (A B A B A B), 40 steps a go
        with_prefix, without = BareStream("mmdit-tiny"), BareStream("mmdit-tiny-nomotion")
        a_ms, b_ms = [], []
        for _ in range(3):
            a_ms.append(with_prefix.ms())
            b_ms.append(without.ms())
        print(f"# motion_prob 0.25 / 0: {sum(a_ms) / sum(b_ms):.2f}x step time, streamed and interleaved "
              f"({statistics.median(a_ms):.1f} vs {statistics.median(b_ms):.1f} ms; the prefix is a mask: "
              "same program, same shapes)")
    if "vae-demo" in by_name and "vae-demo-plain" in by_name:
        weighted, plain = BareStream("vae-demo", steps=10), BareStream("vae-demo-plain", steps=10)
        a_ms, b_ms = [], []
        for _ in range(3):
            a_ms.append(weighted.ms())
            b_ms.append(plain.ms())
        print(f"# demo VAE motion_weight 4 / 0: {sum(a_ms) / sum(b_ms):.2f}x step time, streamed and interleaved "
              f"({statistics.median(a_ms):.0f} vs {statistics.median(b_ms):.0f} ms)")
    if a.loop_steps:
        import tempfile
        names = ("loop-synthetic", "loop-shards", "loop-shards-nockpt")
        with tempfile.TemporaryDirectory() as root:
            shards = _make_shards(os.path.join(root, "shards"))
            bare = BareStream()
            # the bare step is timed between the rows: each row's peer is the mean of the
            # timings just before and just after it (this machine's speed drifts by 10-20%)
            marks, loops = [bare.ms()], []
            for n in names:
                loops.append(loop_row(n, a.loop_steps, root, shards))
                marks.append(bare.ms())
        print("\n| loop (tiny stage 3, defaults) | steps | log every | ckpt every | steps/s | ms/step | "
              "bare step ms (before, after) | of bare step | wall s |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r, before, after in zip(loops, marks, marks[1:]):
            r["bare_ms"] = (before + after) / 2
            print(f"| {r['row']} | {r['steps']} | {r['log_every']} | {r['ckpt_every']} | {r['steps_per_s']:.2f} | "
                  f"{r['step_ms']:.1f} | {r['bare_ms']:.1f} ({before:.1f}, {after:.1f}) | "
                  f"{r['bare_ms'] / r['step_ms']:.2f} | {r['wall_s']:.0f} |")
        r = {x["row"]: x for x in loops}
        print(f"# checkpoints every {r['loop-shards']['ckpt_every']} steps cost "
              f"{r['loop-shards']['step_ms'] / r['loop-shards-nockpt']['step_ms'] - 1:.1%} of the loop's time on shards")
    return 0


if __name__ == "__main__":
    sys.exit(main())
