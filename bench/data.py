"""Data benchmark: can the loader feed the train step?

    python bench/data.py [--clips 8] [--batch 8] [--skip-small]

1. renders SynthTalk clips and preprocesses them (tiny VAE, random weights) into a
   17x64x64 bucket, timing both stages;
2. loader throughput (samples/s) with grain worker_count 0, 1, 2;
3. the train step's consumption: one jitted forward + backward of the MMDiT (tiny and
   small presets, text/audio widths of the weight-free encoders) on one loader batch.

Prints one table; every rate is also given as a ratio to the in-process loader (workers=0)
measured in the same run. The CPU may be shared: figures are medians of repeats.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from omnijax.data import pipeline as pl  # noqa: E402
from omnijax.data import preprocess, synthetic  # noqa: E402


def loader_rate(data_dir: str, batch: int, workers: int, batches: int, repeats: int) -> float:
    it = pl.make_iterator(pl.PipelineConfig(data_dir, batch_size=batch, stage=3, worker_count=workers))
    for _ in range(3):  # start workers, fill buffers
        next(it)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(batches):
            next(it)
        rates.append(batch * batches / (time.perf_counter() - t0))
    return statistics.median(rates)


def step_rate(preset: str, batch: dict, repeats: int) -> tuple[float, int]:
    """samples/s of one jitted forward + backward (flow-matching loss) of an MMDiT preset."""
    from flax import nnx

    from omnijax.data import keypoints as kpt
    from omnijax.diffusion import flow
    from omnijax.models.mmdit import MMDiT, MMDiTConfig

    cfg = MMDiTConfig.preset(preset, text_dim=batch["text"].shape[-1], audio_dim=batch["audio"].shape[-1])
    model = MMDiT(cfg, rngs=nnx.Rngs(0))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))

    def loss_fn(params, rest, b, key):
        m = nnx.merge(graphdef, params, rest)
        d = flow.noised(key, b["latents"])
        keep = {k[5:]: b[k] for k in ("keep_ref", "keep_text", "keep_audio", "keep_pose")}
        _, _, h, w, _ = b["latents"].shape
        pose = kpt.heatmaps_from_normalized(b["keypoints"], round(8 * h * cfg.pose_scale),
                                            round(8 * w * cfg.pose_scale), cfg.pose_sigma, xp=jax.numpy)
        v = m(d["x_t"], d["t"], ref=b["ref_latent"], audio=b["audio"], pose=pose,
              text=b["text"], text_mask=b["text_mask"], keep=keep)
        return flow.per_sample_loss(v, d["target"]).mean()

    step = jax.jit(jax.value_and_grad(loss_fn))
    b = {k: jax.numpy.asarray(v) for k, v in batch.items()}
    key = jax.random.key(0)
    jax.block_until_ready(step(params, rest, b, key))  # compile
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(step(params, rest, b, jax.random.fold_in(key, i)))
        times.append(time.perf_counter() - t0)
    return batch["latents"].shape[0] / statistics.median(times), n_params


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=30, help="batches per loader timing")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-small", action="store_true", help="time only the tiny MMDiT")
    p.add_argument("--workdir", default=None)
    a = p.parse_args(argv)
    work = a.workdir or tempfile.mkdtemp(prefix="omnijax_bench_data_")
    rows = []

    t0 = time.perf_counter()
    synthetic.generate(synthetic.SynthConfig(clips=a.clips, seed=0, size=64, seconds=2.0),
                       os.path.join(work, "synth"), progress=False)
    synth_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    cfg = preprocess.PreprocessConfig(buckets=("17x64x64",), stride=8, clips_per_shard=8, batch_size=8)
    m = preprocess.run(os.path.join(work, "synth", "clips"), os.path.join(work, "cache"), cfg, progress=False)
    prep_s = time.perf_counter() - t0
    data_dir = os.path.join(work, "cache")

    rates = {w: loader_rate(data_dir, a.batch, w, a.batches, a.repeats) for w in (0, 1, 2)}
    base = rates[0]
    for w, r in rates.items():
        rows.append((f"loader, worker_count={w}", f"{r:,.0f}", f"{r / base:.2f}"))
    batch = next(pl.make_iterator(pl.PipelineConfig(data_dir, batch_size=a.batch, stage=3)))
    for preset in ("tiny",) + (() if a.skip_small else ("small",)):
        r, n = step_rate(preset, batch, a.repeats)
        rows.append((f"MMDiT {preset} ({n / 1e6:.1f}M) fwd+bwd", f"{r:,.1f}", f"{r / base:.4f}"))
    rows.append(("synth (render + espeak + mp4)", f"{a.clips / synth_s:,.2f} clips/s", "-"))
    rows.append(("preprocess (incl. VAE compile)", f"{m['records'] / prep_s:,.2f} windows/s", "-"))

    print(f"\nbench/data.py  jax {jax.__version__}  devices {jax.devices()[0].platform} x{jax.device_count()}  "
          f"cpu cores {os.cpu_count()}  batch {a.batch}  bucket 17x64x64 (latents 5x8x8x16)  "
          f"{m['records']} records from {a.clips} clips")
    w0 = max(len(r[0]) for r in rows)
    print(f"| {'what':<{w0}} | samples/s | ratio vs loader w=0 |")
    print(f"|{'-' * (w0 + 2)}|-----------|---------------------|")
    for what, rate, ratio in rows:
        print(f"| {what:<{w0}} | {rate} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
