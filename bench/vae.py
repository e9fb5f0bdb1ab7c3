"""VAE speed and memory vs diffusers' AutoencoderKLWan, same weights, same input, one run.

    python bench/vae.py                          # default cases, memory at small 17 x 32 x 32
    python bench/vae.py --cases tiny:4x17x64 --no-memory      # just the speed table, one case
    python bench/vae.py --preset wan21 --size 128 --frames 17 --scaling 17,65

Prints three tables:
1. speed, per case `preset:BxTxS` (`--cases`, default the tiny preset at 4x17x64x64 and the
   small one at 1x17x32x32): encode, decode (both streamed, as `encode()` / `decode()`) and a
   VAE train step (forward + backward of the reconstruction loss of `VAEObjective`: full-pass
   `moments`, reparameterised z with fixed noise, `reconstruct(clamp=False)`, l1 + l2 + 1e-6
   KL), for our two causal-conv formulations (`conv_impl="conv3d"` and `"taps"`, see
   `omnijax/models/vae_layers.py`) and diffusers (eager torch; its train step backpropagates
   through its own chunked encode/decode, unclamped). Medians of `--repeats` interleaved
   rounds (every row once per round), ratios, and max abs differences: outputs for
   encode/decode, loss and gradients for the train step;
2. peak memory of each call: process peak-RSS increase over the RSS before the call, each
   measured in a fresh subprocess after compiling (so compilation is not counted), via
   /proc/self/status VmHWM reset through /proc/self/clear_refs; plus, for ours, XLA's
   `memory_analysis()` of the compiled program (temporaries vs output buffer). "ours" is
   `conv_impl="auto"` (taps on CPU); "ours conv3d" shows what the taps' stacked copy costs;
3. the same for our streamed decode at growing length: `decode()` (one jitted scan, whole
   output kept) and `StreamDecoder` (4 latent frames per push, frames handed to the host
   and dropped, as a sampler writing an mp4 does). The peer is measured at `--frames` only
   (at 257 frames it takes minutes on a CPU).
CPU figures are noisy on a shared machine; run it on an idle one for numbers to quote.
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

IMPLS = ("conv3d", "taps")  # our two causal-conv formulations, same weights
KL_WEIGHT = 1e-6  # configs/vae.py's objective_opts (l1 and l2 weigh 1)


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


def _inputs(frames: int, size: int, cfg, batch: int = 1):
    """Video, latents and the train step's reparameterisation noise (fixed, shared)."""
    rng = np.random.RandomState(0)
    video = rng.uniform(-1, 1, (batch, frames, size, size, 3)).astype(np.float32)
    f = 1 + (frames - 1) // cfg.time_factor
    s = size // cfg.space_factor
    latents = rng.standard_normal((batch, f, s, s, cfg.z_dim)).astype(np.float32)
    noise = rng.standard_normal((batch, f, s, s, cfg.z_dim)).astype(np.float32)
    return video, latents, noise


def _torch_io(x):
    import torch
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def _from_torch(t):
    return np.moveaxis(t.detach().numpy(), 1, -1)


def _with_impl(vae, conv_impl: str):
    """The same weights under another `conv_impl` (it changes the graph, not the state)."""
    import dataclasses

    from flax import nnx

    from omnijax.models.vae import CausalVAE
    cfg = dataclasses.replace(vae.config, conv_impl=conv_impl)
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: CausalVAE(cfg)))
    return nnx.merge(graphdef, nnx.state(vae))


def _recon_loss(mean, logvar, rec, video, np_):
    """VAEObjective's loss with configs/vae.py's weights, for either framework (`np_`)."""
    err = rec - video
    kl = 0.5 * (mean ** 2 + np_.exp(logvar) - 1.0 - logvar).mean()
    return np_.abs(err).mean() + (err ** 2).mean() + KL_WEIGHT * kl


def _ours_train_step(vae):
    """Jitted value_and_grad of the reconstruction loss wrt every weight (no optimizer)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx
    graphdef, state = nnx.split(vae)

    def loss(state, video, noise):
        model = nnx.merge(graphdef, state)
        mean, logvar = model.moments(video)  # the full pass, as VAEObjective
        rec = model.reconstruct(mean + jnp.exp(0.5 * logvar) * noise, clamp=False)
        return _recon_loss(mean, logvar, rec, video, jnp)

    step = jax.jit(jax.value_and_grad(loss))
    return lambda video, noise: jax.block_until_ready(step(state, video, noise))


def _torch_train_step(model, video, noise):
    """diffusers' train step: its chunked encode (1, 4, 4, ...) and frame-by-frame decode
    (its `_decode` minus the clamp; the caches are not detached, so gradients cross chunks)."""
    import torch
    x, eps = _torch_io(video), _torch_io(noise)

    def step():
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():
            post = model.encode(x).latent_dist
            h = model.post_quant_conv(post.mean + torch.exp(0.5 * post.logvar) * eps)
            model.clear_cache()
            frames = []
            for i in range(h.shape[2]):
                model._conv_idx = [0]
                frames.append(model.decoder(h[:, :, i:i + 1], feat_cache=model._feat_map,
                                            feat_idx=model._conv_idx, first_chunk=i == 0))
            model.clear_cache()
            loss = _recon_loss(post.mean, post.logvar, torch.cat(frames, 2), x, torch)
            loss.backward()
        return float(loss)
    return step


# --------------------------------------------------------------------------- worker

def _worker(spec: dict) -> dict:
    """One measurement in a fresh process: warm up, reset the RSS peak, run, report."""
    from omnijax.models.vae import VAEConfig
    _use_compile_cache(spec["cache"])
    cfg = VAEConfig.preset(spec["preset"])
    video, latents, _ = _inputs(spec["frames"], spec["size"], cfg)
    out: dict = {}
    if spec["impl"] == "diffusers":  # eager torch: nothing to warm up
        import torch
        from diffusers import AutoencoderKLWan, utils
        utils.logging.set_verbosity_error()
        torch.set_grad_enabled(False)
        model = AutoencoderKLWan.from_pretrained(spec["weights"]).eval()
        x = _torch_io(video if spec["op"] == "encode" else latents)
        run = (lambda: model.encode(x).latent_dist.mean) if spec["op"] == "encode" else \
            (lambda: model.decode(x).sample)
    elif spec["op"] == "stream":  # first latent frame, then 4 per push; frames to host, dropped
        from omnijax.convert import load_wan_vae
        vae = _with_impl(load_wan_vae(spec["weights"]), spec["conv_impl"])

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
        vae = _with_impl(load_wan_vae(spec["weights"]), spec["conv_impl"])
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


# --------------------------------------------------------------------------- 1. speed

def _parse_case(text: str):
    """'tiny:4x17x64' -> ('tiny', batch 4, 17 frames, 64 x 64)."""
    preset, _, dims = text.partition(":")
    b, t, s = (int(v) for v in dims.split("x"))
    return preset, b, t, s


def _case_runs(case, directory: str) -> dict:
    """Random diffusers weights saved to `directory`, loaded by ours: `{(op, impl): call}`.

    Every call returns what it computed (outputs; for the train step ours returns (loss,
    grads) and diffusers the loss), which the difference columns compare."""
    import torch
    from diffusers import AutoencoderKLWan

    from omnijax.convert import load_wan_vae
    from omnijax.models.vae import VAEConfig

    preset, b, t, s = case
    cfg = VAEConfig.preset(preset)
    torch.manual_seed(0)
    AutoencoderKLWan(**_diffusers_kwargs(cfg)).save_pretrained(directory)
    theirs = AutoencoderKLWan.from_pretrained(directory).eval()
    loaded = load_wan_vae(directory)
    video, latents, noise = _inputs(t, s, cfg, batch=b)
    runs = {
        ("encode", "diffusers"): lambda: _from_torch(theirs.encode(_torch_io(video)).latent_dist.mean),
        ("decode", "diffusers"): lambda: _from_torch(theirs.decode(_torch_io(latents)).sample),
        ("train step", "diffusers"): _torch_train_step(theirs, video, noise),
    }
    for impl in IMPLS:
        ours = _with_impl(loaded, impl)
        runs[("encode", impl)] = lambda ours=ours: np.asarray(ours.encode(video))
        runs[("decode", impl)] = lambda ours=ours: np.asarray(ours.decode(latents))
        runs[("train step", impl)] = (lambda f=_ours_train_step(ours): f(video, noise))
    return runs


def _diff(a, b) -> str:
    import jax
    if isinstance(b, float):  # ours (loss, grads) vs diffusers' loss
        return f"loss {abs(float(a[0]) - b):.0e}"
    if isinstance(a, tuple):  # ours (loss, grads) vs ours: loss, then grads relative to their scale
        dl = abs(float(a[0]) - float(b[0]))
        dg = max(float(np.abs(np.asarray(x) - np.asarray(y)).max() / (np.abs(np.asarray(y)).max() + 1e-30))
                 for x, y in zip(jax.tree.leaves(a[1]), jax.tree.leaves(b[1])))
        return f"loss {dl:.0e}, grads {dg:.0e} rel"
    return f"{np.abs(a - b).max():.1e}"


def speed_table(cases, repeats: int, tmp: str) -> None:
    from tqdm import tqdm

    all_runs, checks = {}, {}
    started = time.perf_counter()
    for case in cases:
        runs = _case_runs(case, os.path.join(tmp, "weights_" + "_".join(map(str, case))))
        for key, f in tqdm(runs.items(), desc=f"{case[0]}: compile + warm-up", leave=False):
            checks[(case, *key)] = f()
            all_runs[(case, *key)] = f
    warm = time.perf_counter() - started
    times: dict = {k: [] for k in all_runs}
    for _ in tqdm(range(repeats), desc="timing (interleaved rounds)", leave=False):
        for k, f in all_runs.items():  # every row once per round: load drifts hit all rows alike
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print("\n| preset | input | op | diffusers s | ours conv3d s | ours taps s | conv3d / taps "
          "| diffusers / taps | taps vs conv3d | taps vs diffusers |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        preset, b, t, s = case
        for op in ("encode", "decode", "train step"):
            d, c, tp = (med[(case, op, i)] for i in ("diffusers", *IMPLS))
            taps, conv3d, peer = (checks[(case, op, i)] for i in ("taps", "conv3d", "diffusers"))
            print(f"| {preset} | {b}x{t}x{s}x{s} | {op} | {d:.3f} | {c:.3f} | {tp:.3f} | {c / tp:.2f}x "
                  f"| {d / tp:.2f}x | {_diff(taps, conv3d)} | {_diff(taps, peer)} |")
    print(f"medians of {repeats} interleaved rounds; encode/decode streamed, the train step the "
          f"full pass (forward + backward, no optimizer update); compile + warm-up {warm:.0f} s, "
          f"timing {time.perf_counter() - started - warm:.0f} s")


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="tiny:4x17x64,small:1x17x32",
                   help="speed-table cases, preset:BATCHxFRAMESxSIZE, comma-separated")
    p.add_argument("--preset", default="small", choices=("tiny", "small", "wan21"),
                   help="memory tables: preset")
    p.add_argument("--size", type=int, default=32, help="memory tables: square frame size in pixels")
    p.add_argument("--frames", type=int, default=17, help="memory tables: frames")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scaling", default="17,65,257", help="frame counts for the memory curve")
    p.add_argument("--no-memory", action="store_true", help="only the speed table")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(json.loads(args.worker))))
        return 0

    import jax
    import diffusers
    import torch

    from omnijax.models.vae import VAEConfig, count_params

    diffusers.utils.logging.set_verbosity_error()  # no "install accelerate" notice per load
    torch.set_grad_enabled(False)
    started = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="bench_vae_")
    _use_compile_cache(os.path.join(tmp, "xla_cache"))
    cases = [_parse_case(c) for c in args.cases.split(",") if c]
    params = {c[0]: count_params(VAEConfig.preset(c[0])) for c in cases}
    print(f"# VAE bench: jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs; presets "
          + ", ".join(f"{k} ({v:,} params)" for k, v in params.items()))
    speed_table(cases, args.repeats, tmp)

    if not args.no_memory:
        memory_tables(args, tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n# total {time.perf_counter() - started:.0f} s")
    return 0


def memory_tables(args, tmp: str) -> None:
    """Tables 2 and 3, each row a fresh subprocess (so one row's peak is not another's)."""
    import torch
    from diffusers import AutoencoderKLWan
    from tqdm import tqdm

    from omnijax.models.vae import VAEConfig
    cfg = VAEConfig.preset(args.preset)
    weights = os.path.join(tmp, "weights_memory")
    torch.manual_seed(0)
    AutoencoderKLWan(**_diffusers_kwargs(cfg)).save_pretrained(weights)
    base = dict(preset=args.preset, size=args.size, weights=weights, cache=os.path.join(tmp, "xla_cache"),
                conv_impl="auto")
    lengths = [int(x) for x in args.scaling.split(",") if x]
    specs = [dict(base, impl=i, op=o, frames=args.frames, conv_impl=c) for o in ("encode", "decode")
             for i, c in (("diffusers", "auto"), ("ours", "auto"), ("ours", "conv3d"))]
    specs += [dict(base, impl="ours", op="stream", frames=args.frames)]
    # the peer at 65/257 frames would take minutes on a CPU; the curve is about ours
    specs += [dict(base, impl="ours", op=o, frames=n) for n in lengths if n != args.frames
              for o in ("decode", "stream")]
    results = [(s, _measure(s)) for s in tqdm(specs, desc="memory (fresh subprocess each)", leave=False)]

    def row(s, r):
        xla = (f"{r['xla_temp_mib']:.1f} / {r['xla_output_mib']:.1f}" if "xla_temp_mib" in r else "-")
        name = "ours StreamDecoder" if s["op"] == "stream" else s["impl"]
        if s["impl"] == "ours" and s["conv_impl"] != "auto":
            name += " " + s["conv_impl"]
        return f"| {s['op'] if s['op'] != 'stream' else 'decode'} | {name} | {s['frames']} | " \
               f"{r['peak_rss_mib']:.1f} | {xla} | {r['seconds']:.2f} |"

    print(f"\n# memory: preset {args.preset}, video 1x{args.frames}x{args.size}x{args.size}x3; "
          "ours = conv_impl auto (taps on CPU)")
    print("| op | impl | frames | peak RSS increase MiB | XLA temp / output MiB | s (this run) |")
    print("|---|---|---|---|---|---|")
    for s, r in results:
        print(row(s, r))
    video_mib = {n: n * args.size * args.size * 3 * 4 / 2**20 for n in lengths}
    print("\nfloat32 output video: " + ", ".join(f"{n} frames = {m:.1f} MiB" for n, m in video_mib.items()))


if __name__ == "__main__":
    sys.exit(main())
