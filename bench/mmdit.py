"""MMDiT speed: forward / forward+backward, roofline fraction, diffusers Wan peer, compile time vs depth.

    python bench/mmdit.py [--presets tiny,small] [--repeats 5] [--skip-wan] [--skip-compile]

Prints one table. Every figure is a median of `--repeats` timed runs after a warm-up, and
every ratio is against a peer measured in this same run on this same machine:
- "of peak": achieved FLOP/s over the FLOP/s of a 2048^3 f32 JAX matmul timed in the same
  interleaved rounds (same process, same machine, same moment). FLOPs are the dense-transformer count with each weight charged
  for the tokens it actually sees (the plain 6 x params x visual tokens would charge the
  text stream for 256 visual tokens when it sees 32 text tokens, and lands above 100%):
      forward = 2 x sum(params_g x tokens_g) + 4 x layers x (T + L)^2 x width (joint attention)
                + 4 x layers x T_noisy x S x width (audio cross-attention),   train = 3 x forward
  with groups g: visual-stream weights (T visual tokens: reference + noisy), text-stream
  weights (L text tokens), audio projector / key-value weights (video frames / audio slots).
  Wan gets the same treatment (its cross-attention key/value weights and text embedder see
  L tokens, the rest T; attention 4 L T^2 W + 4 L T L W).
- "vs Wan": diffusers `WanTransformer3DModel` (PyTorch, same width / depth / heads / ffn,
  same visual token count, text of the same length), FLOP-normalised:
      (our FLOPs / our time) / (Wan FLOPs / Wan time)    > 1 means we are faster per FLOP.
- compile: `jax.jit(...).lower(...).compile()` of the tiny forward at 2, 8, 32 layers with
  the layers scanned (`nnx.scan`), and unrolled at 2 and 8 (unrolled 32 takes minutes on a
  CPU); scanning should keep it flat in depth.
"""

from __future__ import annotations

import argparse
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
from omnijax.train import flops  # noqa: E402
from omnijax.models.mmdit import MMDiT, MMDiTConfig, num_params, random_mmdit  # noqa: E402

# geometry of the timed inputs: F noisy latent frames of h x w, one reference frame, text of L
F, H, W, L = 3, 16, 16, 32


def _inputs(cfg: MMDiTConfig, b: int = 1) -> dict:
    rng = np.random.default_rng(0)
    t_video = 1 + 4 * (F - 1)
    hp = int(8 * H * cfg.pose_scale)
    f32 = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)  # noqa: E731
    return dict(x=f32(b, F, H, W, cfg.latent_channels), t=jnp.full((b,), 0.5),
                ref=f32(b, 1, H, W, cfg.latent_channels), audio=f32(b, t_video, cfg.audio_dim),
                pose=jnp.asarray(rng.uniform(size=(b, t_video, hp, hp, cfg.pose_channels)), jnp.float32),
                text=f32(b, L, cfg.text_dim), text_mask=jnp.ones((b, L), bool))


def mmdit_forward_flops(cfg: MMDiTConfig, frames_visual: int, frames_noisy: int) -> float:
    """Forward FLOPs of one sample at this script's shapes (the count the trainer's MFU uses)."""
    return flops.mmdit_forward_flops(cfg, frames_visual, frames_noisy, H, W, L)


def wan_forward_flops(wan, cfg: MMDiTConfig, tokens: int) -> float:
    total = 0.0
    for name, p in wan.named_parameters():
        seen = L if (".attn2.to_k" in name or ".attn2.to_v" in name or "text_embedder" in name) else tokens
        if "time" in name:
            seen = 1
        total += 2.0 * p.numel() * seen
    return total + 4.0 * cfg.depth * tokens ** 2 * cfg.width + 4.0 * cfg.depth * tokens * L * cfg.width


def ours_callables(cfg: MMDiTConfig) -> tuple[callable, callable]:
    """Jitted forward and forward+backward (flow-matching loss) of a random-weight MMDiT."""
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
    return (lambda: f(params, x, t, inp).block_until_ready(),
            lambda: jax.block_until_ready(g(params, x, t, inp)))


def wan_callable(cfg: MMDiTConfig) -> tuple[callable, int, float]:
    """diffusers WanTransformer3DModel forward at the same width/depth/heads/ffn and visual
    token count (F + 1 frames stand for our reference + noisy frames), text of length L."""
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

    return run, n, wan_forward_flops(wan, cfg, (F + 1) * (H // 2) * (W // 2))


def matmul_callables(with_torch: bool, n: int = 2048) -> dict[str, callable]:
    a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
    mm = jax.jit(lambda a: a @ a)
    fns = {"jax_mm": lambda: mm(a).block_until_ready()}
    if with_torch:
        import torch
        ta = torch.randn(n, n)
        fns["torch_mm"] = lambda: ta @ ta
    return fns


def interleaved_medians(fns: dict[str, callable], repeats: int) -> dict[str, float]:
    """Warm every callable, then time them in turn `repeats` times: a busy neighbour slows
    every contender of a round alike, so the ratios of medians stay meaningful."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in tqdm(range(repeats), desc="rounds", leave=False):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


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
          f"{os.cpu_count()} CPU cores; inputs: 1 ref + {F} noisy latent frames of {H}x{W}, text {L}; "
          f"medians of {args.repeats} interleaved rounds")
    rows = []
    mm_flops = 2 * 2048 ** 3
    for name in tqdm([s for s in args.presets.split(",") if s], desc="presets"):
        cfg = MMDiTConfig.preset(name, dtype="float32", remat="none")
        n = num_params(cfg)
        tokens = (F + 1) * (H // 2) * (W // 2)
        fns = matmul_callables(with_torch=not args.skip_wan)
        fns["fwd"], fns["fwd_bwd"] = ours_callables(cfg)
        if not args.skip_wan:
            fns["wan"], n_wan, f_wan = wan_callable(cfg)
        med = interleaved_medians(fns, args.repeats)
        peak = mm_flops / med["jax_mm"]
        f_fwd = mmdit_forward_flops(cfg, F + 1, F)
        rows.append((f"[{name}] f32 2048^3 matmul, JAX (the peak)", f"{peak / 1e9:.1f} GFLOP/s", "1.000", ""))
        if not args.skip_wan:
            tpeak = mm_flops / med["torch_mm"]
            rows.append((f"[{name}] f32 2048^3 matmul, torch", f"{tpeak / 1e9:.1f} GFLOP/s", f"{tpeak / peak:.3f}",
                         ""))
            rows.append((f"[{name}] Wan fwd, torch ({n_wan / 1e6:.1f}M, {tokens} tok, {f_wan / 1e9:.2f} GFLOP)",
                         f"{med['wan'] * 1e3:.1f} ms", f"{f_wan / med['wan'] / peak:.3f}", "1.00"))
        vs_wan = "" if args.skip_wan else f"{(f_fwd / med['fwd']) / (f_wan / med['wan']):.2f}"
        rows.append((f"[{name}] MMDiT fwd ({n / 1e6:.1f}M, {tokens} tok, {f_fwd / 1e9:.2f} GFLOP)",
                     f"{med['fwd'] * 1e3:.1f} ms", f"{f_fwd / med['fwd'] / peak:.3f}", vs_wan))
        rows.append((f"[{name}] MMDiT fwd+bwd", f"{med['fwd_bwd'] * 1e3:.1f} ms",
                     f"{3 * f_fwd / med['fwd_bwd'] / peak:.3f}", ""))
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
    print("FLOPs: each weight x 2 x the tokens it sees + attention 4 L T^2 W (+ audio / text "
          "cross-attention); train = 3 x forward. 'vs Wan' = our FLOP/s over Wan's FLOP/s "
          "(>1: faster per FLOP).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
