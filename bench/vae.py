"""VAE speed and memory vs diffusers' AutoencoderKLWan, same weights, same input, one run.

    python bench/vae.py                          # small preset, 17 x 32 x 32, scaling 17/65/257
    python bench/vae.py --preset wan21 --size 128 --frames 17 --scaling 17,65

Prints three tables:
1. encode / decode median wall time (ours jitted, after compile; diffusers eager torch),
   as diffusers/ours ratios, and the max abs difference between the two outputs;
2. peak memory of each call: process peak-RSS increase over the RSS before the call, each
   measured in a fresh subprocess after compiling (so compilation is not counted), via
   /proc/self/status VmHWM reset through /proc/self/clear_refs; plus, for ours, XLA's
   `memory_analysis()` of the compiled program (temporaries vs output buffer);
3. the same for our streamed decode at growing length: `decode()` (one jitted scan, whole
   output kept) and `StreamDecoder` (4 latent frames per push, frames handed to the host
   and dropped, as a sampler writing an mp4 does). The peer is measured at `--frames` only
   (at 257 frames it takes minutes on a CPU).
CPU figures are noisy on a shared machine: medians of `--repeats` alternating runs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


# --------------------------------------------------------------------------- helpers

def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))


def _reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _diffusers_kwargs(cfg) -> dict:
    return dict(base_dim=cfg.base_dim, z_dim=cfg.z_dim, dim_mult=list(cfg.dim_mult),
                num_res_blocks=cfg.num_res_blocks, temperal_downsample=list(cfg.temporal_downsample),
                latents_mean=list(cfg.latents_mean or [0.0] * cfg.z_dim),
                latents_std=list(cfg.latents_std or [1.0] * cfg.z_dim))


def _inputs(frames: int, size: int, cfg):
    rng = np.random.RandomState(0)
    video = rng.uniform(-1, 1, (1, frames, size, size, 3)).astype(np.float32)
    f = 1 + (frames - 1) // cfg.time_factor
    s = size // cfg.space_factor
    latents = rng.standard_normal((1, f, s, s, cfg.z_dim)).astype(np.float32)
    return video, latents


def _torch_io(x):
    import torch
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def _from_torch(t):
    return np.moveaxis(t.detach().numpy(), 1, -1)


# --------------------------------------------------------------------------- worker

def _worker(spec: dict) -> dict:
    """One measurement in a fresh process: warm up, reset the RSS peak, run, report."""
    from omnijax.models.vae import VAEConfig
    _use_compile_cache(spec["cache"])
    cfg = VAEConfig.preset(spec["preset"])
    video, latents = _inputs(spec["frames"], spec["size"], cfg)
    out: dict = {}
    if spec["impl"] == "diffusers":  # eager torch: nothing to warm up
        import torch
        from diffusers import AutoencoderKLWan
        torch.set_grad_enabled(False)
        model = AutoencoderKLWan.from_pretrained(spec["weights"]).eval()
        x = _torch_io(video if spec["op"] == "encode" else latents)
        run = (lambda: model.encode(x).latent_dist.mean) if spec["op"] == "encode" else \
            (lambda: model.decode(x).sample)
    elif spec["op"] == "stream":  # first latent frame, then 4 per push; frames to host, dropped
        from omnijax.convert import load_wan_vae
        vae = load_wan_vae(spec["weights"])

        def run(z=latents):
            dec = vae.stream_decoder()
            np.asarray(dec.push(z[:, :1]))
            for i in range(1, z.shape[1], 4):
                np.asarray(dec.push(z[:, i:i + 4]))
        run(np.zeros(latents.shape[:1] + (9,) + latents.shape[2:], np.float32))  # compile both pushes
    else:  # one jitted program for the whole clip: compile it, keep XLA's memory figures
        import jax
        from omnijax.convert import load_wan_vae
        from omnijax.models import vae as vae_lib
        vae = load_wan_vae(spec["weights"])
        graphdef, state = vae_lib.nnx.split(vae)
        if spec["op"] == "encode":
            method, arg, kwargs = "moments", jax.numpy.asarray(video), (("streamed", True),)
        else:
            method, arg, kwargs = "reconstruct", jax.numpy.asarray(latents), (("clamp", True), ("streamed", True))
        compiled = vae_lib._run_jit.lower(graphdef, state, arg, method, kwargs).compile()
        mem = compiled.memory_analysis()
        out["xla_temp_mib"] = mem.temp_size_in_bytes / 2**20
        out["xla_output_mib"] = mem.output_size_in_bytes / 2**20
        run = lambda: jax.block_until_ready(compiled(state, arg))  # noqa: E731
    _reset_peak()
    before = _status_kib("VmRSS")
    t = time.perf_counter()
    run()
    out["seconds"] = time.perf_counter() - t
    out["peak_rss_mib"] = (_status_kib("VmHWM") - before) / 1024
    return out


def _use_compile_cache(directory: str):
    """Workers reuse the executables the main process (or an earlier worker) compiled."""
    import jax
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _measure(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        raise RuntimeError(f"worker {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=("tiny", "small", "wan21"))
    p.add_argument("--size", type=int, default=32, help="square frame size in pixels")
    p.add_argument("--frames", type=int, default=17)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scaling", default="17,65,257", help="frame counts for the memory curve")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0

    import jax
    import torch
    from diffusers import AutoencoderKLWan
    from tqdm import tqdm

    from omnijax.convert import load_wan_vae
    from omnijax.models.vae import VAEConfig, count_params

    torch.set_grad_enabled(False)
    cfg = VAEConfig.preset(args.preset)
    tmp = tempfile.mkdtemp(prefix="bench_vae_")
    _use_compile_cache(os.path.join(tmp, "xla_cache"))
    torch.manual_seed(0)
    AutoencoderKLWan(**_diffusers_kwargs(cfg)).save_pretrained(tmp)
    theirs = AutoencoderKLWan.from_pretrained(tmp).eval()
    ours = load_wan_vae(tmp)
    video, latents = _inputs(args.frames, args.size, cfg)
    print(f"# VAE bench: preset {args.preset} ({count_params(cfg):,} params), video 1x{args.frames}x"
          f"{args.size}x{args.size}x3, latents {latents.shape}; jax {jax.__version__} "
          f"({jax.devices()[0].platform}), torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{os.cpu_count()} CPUs")

    # ---- 1. time, alternating runs
    runs = {
        ("encode", "ours"): lambda: np.asarray(ours.encode(video)),
        ("encode", "ours full"): lambda: np.asarray(ours.encode(video, streamed=False)),
        ("encode", "diffusers"): lambda: _from_torch(theirs.encode(_torch_io(video)).latent_dist.mean),
        ("decode", "ours"): lambda: np.asarray(ours.decode(latents)),
        ("decode", "ours full"): lambda: np.asarray(ours.decode(latents, streamed=False)),
        ("decode", "diffusers"): lambda: _from_torch(theirs.decode(_torch_io(latents)).sample),
    }
    outputs = {k: f() for k, f in tqdm(runs.items(), desc="compile + warm-up", leave=False)}
    times: dict = {k: [] for k in runs}
    for _ in tqdm(range(args.repeats), desc="timing", leave=False):
        for k, f in runs.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print("\n| op | impl | median s | diffusers / impl | max abs diff vs diffusers |")
    print("|---|---|---|---|---|")
    for op in ("encode", "decode"):
        for impl in ("diffusers", "ours", "ours full"):
            diff = np.abs(outputs[(op, impl)] - outputs[(op, "diffusers")]).max()
            print(f"| {op} | {impl} | {med[(op, impl)]:.3f} | {med[(op, 'diffusers')] / med[(op, impl)]:.2f}x "
                  f"| {diff:.1e} |")

    # ---- 2 + 3. memory in fresh subprocesses
    base = dict(preset=args.preset, size=args.size, weights=tmp, cache=os.path.join(tmp, "xla_cache"))
    lengths = [int(x) for x in args.scaling.split(",") if x]
    specs = [dict(base, impl=i, op=o, frames=args.frames) for o in ("encode", "decode")
             for i in ("diffusers", "ours")]
    specs += [dict(base, impl="ours", op="stream", frames=args.frames)]
    # the peer at 65/257 frames would take minutes on a CPU; the curve is about ours
    specs += [dict(base, impl="ours", op=o, frames=n) for n in lengths if n != args.frames
              for o in ("decode", "stream")]
    results = [(s, _measure(s)) for s in tqdm(specs, desc="memory (fresh subprocess each)", leave=False)]

    def row(s, r):
        xla = (f"{r['xla_temp_mib']:.1f} / {r['xla_output_mib']:.1f}" if "xla_temp_mib" in r else "-")
        name = {"stream": "ours StreamDecoder"}.get(s["op"], s["impl"])
        return f"| {s['op'] if s['op'] != 'stream' else 'decode'} | {name} | {s['frames']} | " \
               f"{r['peak_rss_mib']:.1f} | {xla} | {r['seconds']:.2f} |"

    print("\n| op | impl | frames | peak RSS increase MiB | XLA temp / output MiB | s (this run) |")
    print("|---|---|---|---|---|---|")
    for s, r in results:
        print(row(s, r))
    video_mib = {n: n * args.size * args.size * 3 * 4 / 2**20 for n in lengths}
    print("\nfloat32 output video: " + ", ".join(f"{n} frames = {m:.1f} MiB" for n, m in video_mib.items()))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
