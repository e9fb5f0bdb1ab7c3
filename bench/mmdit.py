"""MMDiT speed: forward / forward+backward, roofline fraction, diffusers Wan peer, compile time vs depth.

    python bench/mmdit.py [--presets tiny,small] [--repeats 5] [--skip-wan] [--skip-compile]

Prints one table. Every figure is a median of `--repeats` timed runs after a warm-up, and
every ratio is against a peer measured in this same run on this same machine:
- "of peak": achieved FLOP/s over the best f32 matmul FLOP/s of this machine (measured
  first, same process), with FLOPs counted as
      train = 6 x params x tokens + 12 x layers x tokens^2 x width,  forward = 1/3 of it
  (tokens = all visual tokens, reference included; params = all parameters).
- "vs Wan": diffusers `WanTransformer3DModel` (PyTorch, same width / depth / heads / ffn,
  same visual token count, text of the same length), FLOP-normalised:
      (our FLOPs / our time) / (Wan FLOPs / Wan time)    > 1 means we are faster per FLOP.
- compile: `jax.jit(...).lower(...).compile()` of the tiny forward at 2, 8, 32 layers with
  the layers scanned (`nnx.scan`), and unrolled at 2 and 8 (unrolled 32 takes minutes on a
  CPU); scanning should keep it flat in depth.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omnijax.diffusion import flow  # noqa: E402
from omnijax.models.mmdit import MMDiT, MMDiTConfig, num_params, random_mmdit  # noqa: E402

# geometry of the timed inputs: F noisy latent frames of h x w, one reference frame, text of L
F, H, W, L = 3, 16, 16, 32


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up (compile)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(repeats: int) -> float:
    """Best f32 matmul FLOP/s over a few square sizes."""
    best = 0.0
    for n in (512, 1024, 2048):
        a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
        mm = jax.jit(lambda a: a @ a)
        t = _median_time(lambda: mm(a).block_until_ready(), repeats)
        best = max(best, 2 * n ** 3 / t)
    return best


def _inputs(cfg: MMDiTConfig, b: int = 1) -> dict:
    rng = np.random.default_rng(0)
    t_video = 1 + 4 * (F - 1)
    hp = int(8 * H * cfg.pose_scale)
    f32 = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
    return dict(x=f32(b, F, H, W, cfg.latent_channels), t=jnp.full((b,), 0.5),
                ref=f32(b, 1, H, W, cfg.latent_channels), audio=f32(b, t_video, cfg.audio_dim),
                pose=jnp.asarray(rng.uniform(size=(b, t_video, hp, hp, cfg.pose_channels)), jnp.float32),
                text=f32(b, L, cfg.text_dim), text_mask=jnp.ones((b, L), bool))


def flops(params: int, depth: int, width: int, tokens: int, train: bool) -> float:
    total = 6.0 * params * tokens + 12.0 * depth * tokens ** 2 * width
    return total if train else total / 3


def time_ours(cfg: MMDiTConfig, repeats: int) -> tuple[float, float]:
    model = random_mmdit(cfg)
    graphdef, params = nnx.split(model)
    inp = _inputs(cfg)
    x = inp.pop("x")
    t = inp.pop("t")
    target = jnp.asarray(np.random.default_rng(1).normal(size=x.shape), jnp.float32)

    def fwd(params, x, t, inp):
        return nnx.merge(graphdef, params)(x, t, **inp)

    def loss(params, x, t, inp):
        return flow.per_sample_loss(fwd(params, x, t, inp), target).mean()

    f = jax.jit(fwd)
    g = jax.jit(jax.value_and_grad(loss))
    t_fwd = _median_time(lambda: f(params, x, t, inp).block_until_ready(), repeats)
    t_bwd = _median_time(lambda: jax.block_until_ready(g(params, x, t, inp)), repeats)
    return t_fwd, t_bwd


def time_wan(cfg: MMDiTConfig, repeats: int) -> tuple[float, int]:
    """diffusers WanTransformer3DModel forward at the same width/depth/tokens (F + 1 frames
    stand for our reference + noisy frames)."""
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    wan = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=cfg.heads,
                                attention_head_dim=cfg.head_dim, in_channels=cfg.latent_channels,
                                out_channels=cfg.latent_channels, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
                                ffn_dim=cfg.ffn, num_layers=cfg.depth, cross_attn_norm=True,
                                qk_norm="rms_norm_across_heads", eps=1e-6).eval()
    n = sum(p.numel() for p in wan.parameters())
    hs = torch.randn(1, cfg.latent_channels, F + 1, H, W)
    ts = torch.tensor([500.0])
    enc = torch.randn(1, L, cfg.text_dim)

    def run():
        with torch.inference_mode():
            wan(hidden_states=hs, timestep=ts, encoder_hidden_states=enc, return_dict=False)

    return _median_time(run, repeats), n


def compile_time(depth: int, scan: bool) -> float:
    cfg = MMDiTConfig.tiny(depth=depth, scan_layers=scan)
    abstract = nnx.eval_shape(lambda: MMDiT(cfg, rngs=nnx.Rngs(0)))
    graphdef, params = nnx.split(abstract)
    inp = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in _inputs(cfg).items()}
    x, t = inp.pop("x"), inp.pop("t")

    def fwd(params, x, t, inp):
        return nnx.merge(graphdef, params)(x, t, **inp)

    t0 = time.perf_counter()
    jax.jit(fwd).lower(params, x, t, inp).compile()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,small")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--skip-wan", action="store_true")
    p.add_argument("--skip-compile", action="store_true")
    args = p.parse_args(argv)

    print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}), "
          f"{os.cpu_count()} CPU cores; inputs: 1 ref + {F} noisy latent frames of {H}x{W}, text {L}")
    peak = matmul_peak(args.repeats)
    rows = [("f32 matmul peak (best of 512/1024/2048)", f"{peak / 1e9:.1f} GFLOP/s", "1.000", "")]
    presets = [s for s in args.presets.split(",") if s]
    for name in tqdm(presets, desc="presets"):
        cfg = MMDiTConfig.preset(name, dtype="float32", remat="none")
        n = num_params(cfg)
        tokens = (F + 1) * (H // 2) * (W // 2)
        t_fwd, t_bwd = time_ours(cfg, args.repeats)
        f_fwd, f_bwd = flops(n, cfg.depth, cfg.width, tokens, False), flops(n, cfg.depth, cfg.width, tokens, True)
        vs_wan = ""
        if not args.skip_wan:
            t_wan, n_wan = time_wan(cfg, args.repeats)
            f_wan = flops(n_wan, cfg.depth, cfg.width, tokens, False)
            vs_wan = f"{(f_fwd / t_fwd) / (f_wan / t_wan):.2f}"
            rows.append((f"Wan {name}-shape fwd ({n_wan / 1e6:.1f}M, torch {tokens} tok)", f"{t_wan * 1e3:.1f} ms",
                         f"{f_wan / t_wan / peak:.3f}", "1.00"))
        rows.append((f"MMDiT {name} fwd ({n / 1e6:.1f}M, {tokens} tok)", f"{t_fwd * 1e3:.1f} ms",
                     f"{f_fwd / t_fwd / peak:.3f}", vs_wan))
        rows.append((f"MMDiT {name} fwd+bwd", f"{t_bwd * 1e3:.1f} ms", f"{f_bwd / t_bwd / peak:.3f}", ""))
    if not args.skip_compile:
        base = None
        for depth in tqdm((2, 8, 32), desc="compile"):
            for scan in (True, False) if depth <= 8 else (True,):  # unrolled 32 takes minutes
                c = compile_time(depth, scan)
                base = base or c
                rows.append((f"compile fwd tiny, {depth} layers, {'scanned' if scan else 'unrolled'}",
                             f"{c:.2f} s", "", f"{c / base:.2f}x of 2-layer scanned"))

    header = ("measurement", "median", "of peak", "ratio")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    print("FLOPs: train = 6 x params x tokens + 12 x layers x tokens^2 x width; forward = 1/3 of it. "
          "'vs Wan' = our FLOP/s over Wan's FLOP/s (>1: faster per FLOP).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
