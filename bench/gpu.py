"""What only an accelerator can show, in one prepared run (`bench/gpu.sh`, < 8 minutes on
one H100 / H200):

    1. peaks       the card's bf16 dense spec (H100/H200 SXM: 989 TFLOP/s) and a bf16
                   8192^3 matmul measured here
    2. train MFU   the full bf16 train step of the `small` and `base` MMDiT presets (f32
                   masters, remat per preset), model FLOPs = the trainer's per-weight count
                   (`flops.mmdit_forward_flops` x 3), against both peaks
    3. attention   cuDNN vs XLA `dot_product_attention`, bf16, with a NON-prefix key mask
                   (every 3rd key masked), forward and forward+backward, and their agreement
    4. VAE         ours (Wan2.1 preset, bf16) vs diffusers `AutoencoderKLWan` on the GPU:
                   encode and decode of 17 x 256 x 256
    5. sampler     seconds of video per second for the `small` MMDiT + `small` VAE, 3
                   guidance branches batched, 20 UniPC steps, 3 chained segments

`--dry-run` runs every section at toy sizes on whatever backend there is (CPU in CI), so
the script is known to work before device time is spent on it. Tables go to `--out`
(markdown), which `python -m bench` merges into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

SPEC_BF16 = {"h100": 989e12, "h200": 989e12, "a100": 312e12, "l4": 121e12}


def _median(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def peaks(dry: bool) -> dict:
    import jax
    import jax.numpy as jnp
    n = 512 if dry else 8192
    a = jnp.ones((n, n), jnp.bfloat16)
    f = jax.jit(lambda a: a @ a)
    dt = _median(lambda: f(a).block_until_ready(), 3 if dry else 10)
    kind = jax.devices()[0].device_kind.lower()
    spec = next((v for k, v in SPEC_BF16.items() if k in kind), None)
    return {"device": jax.devices()[0].device_kind, "measured": 2 * n ** 3 / dt, "spec": spec, "n": n}


def train_mfu(size: str, dry: bool, peak: dict) -> dict:
    from omnijax.demo import config_module
    from omnijax.train import trainer
    import jax
    c = config_module("omnihuman").get_config(f"size={'tiny' if dry else size},stage=3")
    if dry:
        c.train.update(batch_size=2, compute_dtype="float32")
    else:
        shapes = {"small": (5, 16, 16, 8), "base": (9, 30, 52, 4)}   # latent F, h, w and batch
        F, h, w, B = shapes[size]
        c.data.update(latent_frames=F, latent_height=h, latent_width=w, text_len=128)
        c.train.update(batch_size=B, compute_dtype="bfloat16")
    c.observe.peak_flops = 1.0
    su = trainer.setup(c)
    data = su.objective.make_data(c, su.mesh)
    batches = [su.global_batch(next(data)) for _ in range(4)]
    state = su.init_state(0)
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=su.batch_shardings[k])
                for k, v in su.batch_spec.items()}
    compiled, info = trainer.compile_step(su.step, su.target, abstract)
    times = []
    for i in range(6 if not dry else 3):
        t0 = time.perf_counter()
        state, m = compiled(state, batches[i % 4])
        jax.block_until_ready(m)
        times.append(time.perf_counter() - t0)
    dt = statistics.median(times[1:])
    flops = su.flops_per_example * int(c.train.batch_size)
    return {"row": f"train {size}{' (dry: tiny)' if dry else ''}", "step_ms": 1e3 * dt,
            "tflops": flops / dt / 1e12, "mfu_measured": flops / dt / peak["measured"],
            "mfu_spec": flops / dt / peak["spec"] if peak["spec"] else float("nan"),
            "compile_s": info["compile_s"], "temp_gib": info.get("temp_size_in_bytes", 0) / 2 ** 30}


def attention_rows(dry: bool) -> list[dict]:
    import jax
    import jax.numpy as jnp
    from omnijax.models.attention import attention
    B, L, H, D = (1, 256, 2, 64) if dry else (2, 8192, 12, 128)
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(B, L, H, D)), jnp.bfloat16) for _ in range(3))
    mask = jnp.asarray(np.arange(L)[None].repeat(B, 0) % 3 != 2)      # not a prefix
    ref = attention(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), mask,
                    implementation="reference")
    rows = []
    on_gpu = jax.default_backend() == "gpu"
    for impl in ("xla", "cudnn"):
        if impl == "cudnn" and not on_gpu:
            rows.append({"impl": impl, "note": "n/a: no GPU"})
            continue
        fwd = jax.jit(lambda q, k, v, m: attention(q, k, v, m, implementation=impl))
        bwd = jax.jit(jax.grad(lambda q, k, v, m: attention(q, k, v, m, implementation=impl)
                               .astype(jnp.float32).sum(), argnums=(0, 1, 2)))
        out = fwd(q, k, v, mask)
        err = float(jnp.abs(out.astype(jnp.float32) - ref).max())
        t_f = _median(lambda: fwd(q, k, v, mask).block_until_ready(), 5)
        t_b = _median(lambda: jax.block_until_ready(bwd(q, k, v, mask)), 5)
        flops = 4 * B * H * L * L * D
        rows.append({"impl": impl, "fwd_ms": 1e3 * t_f, "fwdbwd_ms": 1e3 * t_b,
                     "fwd_tflops": flops / t_f / 1e12, "max_err_vs_f32": err})
    return rows


def vae_rows(dry: bool) -> list[dict]:
    import jax.numpy as jnp
    from flax import nnx
    from omnijax.models.vae import CausalVAE, VAEConfig
    cfg = VAEConfig.tiny() if dry else VAEConfig.wan21()
    T, S = (5, 32) if dry else (17, 256)
    vae = CausalVAE(cfg, rngs=nnx.Rngs(0))
    video = np.random.default_rng(0).uniform(-1, 1, (1, T, S, S, 3)).astype(np.float32)
    z = vae.encode(video)
    rows = [{"row": f"ours encode {T}x{S}x{S}", "ms": 1e3 * _median(lambda: vae.encode(video).block_until_ready(), 3)},
            {"row": "ours decode", "ms": 1e3 * _median(lambda: vae.decode(z).block_until_ready(), 3)}]
    try:
        import torch
        from diffusers import AutoencoderKLWan
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        kw = {} if not dry else dict(base_dim=8, dim_mult=[1, 2, 2, 2], num_res_blocks=1)
        ref = AutoencoderKLWan(**kw).to(dev).eval()
        x = torch.from_numpy(video).permute(0, 4, 1, 2, 3).to(dev)
        sync = torch.cuda.synchronize if dev == "cuda" else (lambda: None)

        def enc():
            with torch.inference_mode():
                ref.encode(x)
            sync()
        with torch.inference_mode():
            lat = ref.encode(x).latent_dist.mean

        def dec():
            with torch.inference_mode():
                ref.decode(lat)
            sync()
        rows += [{"row": f"diffusers encode ({dev})", "ms": 1e3 * _median(enc, 3)},
                 {"row": f"diffusers decode ({dev})", "ms": 1e3 * _median(dec, 3)}]
    except ImportError as e:
        rows.append({"row": "diffusers", "ms": float("nan"), "note": f"not installed: {e}"})
    del jnp
    return rows


def sampler_row(dry: bool) -> dict:
    from flax import nnx
    from omnijax.models.encoders import get_audio_encoder, get_text_encoder
    from omnijax.models.mmdit import MMDiTConfig, random_mmdit
    from omnijax.models.vae import CausalVAE, VAEConfig
    from omnijax.sample import long_video as lv
    from omnijax.sample.bundle import Bundle
    size, mc, vc = (32, MMDiTConfig.tiny(), VAEConfig.tiny()) if dry else \
        (128, MMDiTConfig.small(text_dim=64, audio_dim=80, dtype="bfloat16"), VAEConfig.small())
    h = size // 8
    meta = {"recipe": {"flow_shift": 1.0, "latent_frames": 5, "latent_height": h, "latent_width": h},
            "video": {"fps": 25.0, "height": size, "width": size, "frames_per_segment": 17,
                      "motion_video_frames": 5, "sample_rate": 16000},
            "pose": {"scale": 0.5, "sigma": 0.04}, "encoders": {"audio": "mel", "text": "bytes"},
            "sampler": {"solver": "unipc", "steps": 4 if dry else 20, "cfg_text": [3.0, 3.0],
                        "cfg_audio": [6.0, 3.0], "schedule": "linear"}}
    bundle = Bundle("", meta, random_mmdit(mc), CausalVAE(vc, rngs=nnx.Rngs(0)), get_audio_encoder("mel"),
                    get_text_encoder("bytes"))
    t = np.arange(int((17 + 24) / 25 * 16000)) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    ref = np.zeros((size, size, 3), np.uint8)
    list(lv.generate_segments(bundle, ref=ref, audio=wave[:17 * 640], text="x", progress=False, compute_dtype=None))
    t0 = time.perf_counter()
    segs = list(lv.generate_segments(bundle, ref=ref, audio=wave, text="x", progress=False, compute_dtype=None))
    wall = time.perf_counter() - t0
    frames = sum(s.frames.shape[0] for s in segs)
    return {"row": f"sampler {'tiny (dry)' if dry else 'small'} {size}px", "segments": len(segs),
            "video_s": frames / 25, "wall_s": wall, "video_s_per_s": frames / 25 / wall,
            "compiles": segs[-1].compiles}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="toy sizes on any backend (CI)")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "gpu_results.md"))
    a = p.parse_args(argv)
    import jax
    dry = a.dry_run
    t0 = time.perf_counter()
    pk = peaks(dry)
    lines = [f"## GPU figures (`bench/gpu.sh{' --dry-run' if dry else ''}`)", "",
             f"{datetime.date.today()}, {pk['device']} ({jax.default_backend()}), jax {jax.__version__}"
             + (" -- DRY RUN at toy sizes: these figures prove the script runs, they are not GPU figures" if dry else ""),
             "", "| peak | TFLOP/s |", "|---|---|",
             f"| bf16 {pk['n']}^3 matmul, measured | {pk['measured'] / 1e12:.1f} |",
             f"| bf16 dense spec | {pk['spec'] / 1e12:.0f} |" if pk["spec"] else "| bf16 dense spec | unknown card |",
             "", "| train step (bf16, f32 masters) | ms | TFLOP/s | MFU vs measured | MFU vs spec | compile s | XLA temp GiB |",
             "|---|---|---|---|---|---|---|"]
    for size in ("small", "base"):
        r = train_mfu(size, dry, pk)
        lines.append(f"| {r['row']} | {r['step_ms']:.1f} | {r['tflops']:.1f} | {100 * r['mfu_measured']:.1f}% | "
                     f"{100 * r['mfu_spec']:.1f}% | {r['compile_s']:.1f} | {r['temp_gib']:.2f} |")
        print(lines[-1], flush=True)
    lines += ["", "| attention, non-prefix key mask | fwd ms | fwd+bwd ms | fwd TFLOP/s | max abs err vs f32 |",
              "|---|---|---|---|---|"]
    for r in attention_rows(dry):
        if "note" in r:
            lines.append(f"| {r['impl']} | {r['note']} | | | |")
        else:
            lines.append(f"| {r['impl']} | {r['fwd_ms']:.2f} | {r['fwdbwd_ms']:.2f} | {r['fwd_tflops']:.1f} | "
                         f"{r['max_err_vs_f32']:.3g} |")
    lines += ["", "| VAE | ms |", "|---|---|"]
    lines += [f"| {r['row']} | {r['ms']:.1f} |" + (f" {r['note']}" if "note" in r else "") for r in vae_rows(dry)]
    s = sampler_row(dry)
    lines += ["", "| sampler | segments | video s | wall s | video s per s | compiles |", "|---|---|---|---|---|---|",
              f"| {s['row']} | {s['segments']} | {s['video_s']:.2f} | {s['wall_s']:.2f} | {s['video_s_per_s']:.2f} | "
              f"{s['compiles']} |", "", f"(whole run: {time.perf_counter() - t0:.0f} s)", ""]
    text = "\n".join(lines)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, a.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
