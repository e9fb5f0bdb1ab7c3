"""Sampling speed: seconds of video per second, time and memory vs length, and guidance cost.

    python bench/sample.py [--segments 1,3,9] [--steps 20] [--size 64] [--repeats 5]

Part 1 (long video, what `omnijax sample` runs): a random-weight tiny MMDiT and tiny VAE at
`--size` px, 17-frame segments chained by motion frames, 20 UniPC steps with text + audio
guidance (3 branches in one batched forward). Each length runs in its own subprocess: a
1-segment warm-up video compiles everything, then the timed video of N segments runs on
the warm programs. Reported: wall time, seconds of video per second of compute, the growth
of peak RSS during the timed video (ru_maxrss after minus before), and how many programs
the segment function compiled (1 for any length).

Part 2 (one denoise step): the guided velocity as ONE batched forward of 3 branches, against
three separate forwards (what a naive sampler does), and against diffusers
`WanTransformer3DModel` called three times at the same width / depth / heads / ffn and
visual token count (torch, same machine), interleaved rounds, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _bundle(size: int, steps: int):
    """An in-memory export: random tiny MMDiT + tiny VAE, mel + bytes encoders."""
    from omnijax.models.encoders import get_audio_encoder, get_text_encoder
    from omnijax.models.mmdit import MMDiTConfig, random_mmdit
    from omnijax.models.vae import CausalVAE, VAEConfig
    from omnijax.sample.bundle import Bundle
    from flax import nnx
    h = size // 8
    meta = {"recipe": {"flow_shift": 1.0, "latent_frames": 5, "latent_height": h, "latent_width": h},
            "video": {"fps": 25.0, "height": size, "width": size, "frames_per_segment": 17,
                      "motion_video_frames": 5, "sample_rate": 16000},
            "pose": {"scale": 0.5, "sigma": 0.04}, "encoders": {"audio": "mel", "text": "bytes"},
            "sampler": {"solver": "unipc", "steps": steps, "cfg_text": [3.0, 3.0], "cfg_audio": [6.0, 3.0],
                        "schedule": "linear"}}
    return Bundle(path="", meta=meta, mmdit=random_mmdit(MMDiTConfig.tiny(), seed=0),
                  vae=CausalVAE(VAEConfig.tiny(), rngs=nnx.Rngs(0)),
                  audio_encoder=get_audio_encoder("mel"), text_encoder=get_text_encoder("bytes"))


def _speech(frames: int) -> np.ndarray:
    t = np.arange(int(frames / 25 * 16000) + 1) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


def child(segments: int, size: int, steps: int) -> dict:
    """One length, in this (fresh) process."""
    from omnijax.sample import long_video as lv
    bundle = _bundle(size, steps)
    ref = np.random.default_rng(0).integers(0, 255, (size, size, 3), dtype=np.uint8)

    def video(n_segments: int) -> tuple[float, int, int]:
        frames = 17 + 12 * (n_segments - 1)
        t0 = time.perf_counter()
        segs = list(lv.generate_segments(bundle, ref=ref, audio=_speech(frames), text="a person talks",
                                         progress=False))
        return time.perf_counter() - t0, sum(s.frames.shape[0] for s in segs), segs[-1].compiles

    warm_s, _, _ = video(1)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, frames, compiles = video(segments)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"segments": segments, "frames": frames, "wall_s": wall, "warmup_s": warm_s,
            "video_s": frames / 25.0, "video_s_per_s": frames / 25.0 / wall,
            "rss_growth_mib": (rss1 - rss0) / 1024, "peak_rss_mib": rss1 / 1024, "compiles": compiles}


def long_video_rows(lengths: list[int], size: int, steps: int) -> list[dict]:
    rows = []
    for n in lengths:
        out = subprocess.run([sys.executable, __file__, "--child", str(n), "--size", str(size),
                              "--steps", str(steps)], capture_output=True, text=True, check=True,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  done {n} segments: {rows[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    return rows


def guidance_rows(size: int, repeats: int) -> dict[str, float]:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from omnijax.sample import segment as seg

    bundle = _bundle(size, 20)
    model, cfg = bundle.mmdit, bundle.mmdit.config
    h = size // 8
    spec = seg.SegmentSpec(solver="unipc", steps=20, cfg_text=(3, 3), cfg_audio=(6, 3))
    shapes = seg.input_spec(cfg, 1, 5, h, h, 64)
    rng = np.random.default_rng(0)
    inp = {k: (jnp.asarray(rng.normal(size=s.shape), jnp.float32) if s.dtype == jnp.float32
               else jnp.ones(s.shape, bool)) for k, s in shapes.items()}
    inp["clean"] = jnp.zeros_like(inp["clean"])
    graphdef, params = nnx.split(model)
    x = inp["noise"]

    batched = jax.jit(lambda p, i, x: seg.velocity(nnx.merge(graphdef, p), spec, i, x, jnp.float32(0.5),
                                                   jnp.int32(3)))

    def one(p, i, x, text, audio):
        keep = {"ref": i["has_ref"], "pose": i["has_pose"], "text": text, "audio": audio}
        return nnx.merge(graphdef, p)(x, jnp.full((1,), 0.5), clean=i["clean"], ref=i["ref"], audio=i["audio"],
                                      pose=i["pose"], text=i["text"], text_mask=i["text_mask"], keep=keep)

    single = jax.jit(one)
    on, off = jnp.ones(1, bool), jnp.zeros(1, bool)

    def separate():
        vs = [single(params, inp, x, off, off), single(params, inp, x, on, off), single(params, inp, x, on, on)]
        return jax.block_until_ready(vs)

    fns = {"batched": lambda: batched(params, inp, x).block_until_ready(), "separate": separate}
    try:
        import torch
        from diffusers import WanTransformer3DModel
        torch.manual_seed(0)
        wan = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=cfg.heads,
                                    attention_head_dim=cfg.head_dim, in_channels=cfg.latent_channels,
                                    out_channels=cfg.latent_channels, text_dim=cfg.text_dim,
                                    freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn, num_layers=cfg.depth,
                                    cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6).eval()
        hs, ts = torch.randn(1, cfg.latent_channels, 6, h, h), torch.tensor([500.0])
        enc = torch.randn(1, 64, cfg.text_dim)

        def wan3():
            with torch.inference_mode():
                for _ in range(3):
                    wan(hidden_states=hs, timestep=ts, encoder_hidden_states=enc, return_dict=False)
        fns["wan x3"] = wan3
    except ImportError:
        pass
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--segments", default="1,3,9")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child, a.size, a.steps)))
        return 0
    import jax
    print(f"# {jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}; tiny MMDiT + tiny VAE, "
          f"{a.size}x{a.size}, 17-frame segments, {a.steps} UniPC steps, 3 guidance branches batched")
    rows = long_video_rows([int(n) for n in a.segments.split(",")], a.size, a.steps)
    print("| segments | frames | video s | wall s | s/segment | video s per s | RSS growth MiB | peak RSS MiB | compiles |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['segments']} | {r['frames']} | {r['video_s']:.2f} | {r['wall_s']:.2f} | "
              f"{r['wall_s'] / r['segments']:.3f} | {r['video_s_per_s']:.2f} | {r['rss_growth_mib']:.1f} | "
              f"{r['peak_rss_mib']:.0f} | {r['compiles']} |")
    first, last = rows[0], rows[-1]
    per = [r["wall_s"] / r["segments"] for r in rows]
    print(f"# time per segment, longest / shortest: {per[-1] / per[0]:.3f} (linear: 1.0)")
    print(f"# peak RSS, longest / shortest: {last['peak_rss_mib'] / first['peak_rss_mib']:.3f} (flat: 1.0)")
    g = guidance_rows(a.size, a.repeats)
    print("\n| one guided velocity (3 branches) | median ms | vs batched |")
    print("|---|---|---|")
    for k, v in g.items():
        print(f"| {k} | {1e3 * v:.2f} | {v / g['batched']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
