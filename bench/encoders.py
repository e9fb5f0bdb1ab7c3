"""Speed of omnijax's wav2vec2 and T5 encoders against transformers' PyTorch models, same weights.

    python bench/encoders.py [--reps 5] [--seconds 10] [--captions 16] [--tokens 64]

Builds wav2vec2-base (12 layers, 768 wide, random weights) and a t5-small-sized encoder
(6 layers, d_model 512, gated-gelu as T5 v1.1) in transformers, saves them as safetensors,
loads them with omnijax's loaders, then times, alternating one run of each per repetition:
  * wav2vec2 on a 10 s clip at 16 kHz (all hidden states),
  * T5 on a batch of 16 captions padded to 64 tokens.
Prints medians and the ratio torch / omnijax (> 1: omnijax faster) plus the max abs
difference of the outputs. The first JAX call (trace + compile + one run) is reported
separately; "load" is omnijax's safetensors -> NNX load. The CPU
may be shared: read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omnijax.models.encoders.t5 import load_t5  # noqa: E402
from omnijax.models.encoders.wav2vec2 import load_wav2vec2  # noqa: E402


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _bench_pair(name, run_ours, run_torch, reps):
    first_s = _timed(run_ours)  # first call traces, compiles and runs once
    run_torch()  # torch warm-up (allocator, oneDNN primitive cache)
    ours, ref = [], []
    for _ in range(reps):  # alternate so load changes on a shared machine hit both alike
        ours.append(_timed(run_ours))
        ref.append(_timed(run_torch))
    o, r = statistics.median(ours), statistics.median(ref)
    return dict(name=name, ours=o, torch=r, ratio=r / o, compile=first_s)


def bench_wav2vec2(tmp, seconds, reps):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    hf = Wav2Vec2Model(Wav2Vec2Config()).eval()  # wav2vec2-base architecture
    path = os.path.join(tmp, "w2v")
    hf.save_pretrained(path, safe_serialization=True)
    t = time.perf_counter()
    ours = load_wav2vec2(path)
    load_s = time.perf_counter() - t
    wave = np.random.default_rng(0).standard_normal((1, int(seconds * 16000))).astype(np.float32)
    wave_j, wave_t = jnp.asarray(wave), torch.from_numpy(wave)

    def run_ours():
        return jax.block_until_ready(ours(wave_j))

    def run_torch():
        with torch.inference_mode():
            return hf(wave_t, output_hidden_states=True).hidden_states

    diff = max(float(np.abs(np.asarray(a) - b.numpy()).max()) for a, b in zip(run_ours(), run_torch()))
    row = _bench_pair(f"wav2vec2-base, {seconds:g} s clip", run_ours, run_torch, reps)
    params = sum(p.numel() for p in hf.parameters())
    return dict(row, diff=diff, load=load_s, params=params)


def bench_t5(tmp, captions, tokens, reps):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6,
                   feed_forward_proj="gated-gelu")  # t5-v1_1-small's encoder
    hf = T5EncoderModel(cfg).eval()
    path = os.path.join(tmp, "t5")
    hf.save_pretrained(path, safe_serialization=True)
    t = time.perf_counter()
    ours = load_t5(path)
    load_s = time.perf_counter() - t
    rng = np.random.default_rng(0)
    ids = rng.integers(3, 32000, (captions, tokens)).astype(np.int32)
    lengths = rng.integers(tokens // 4, tokens + 1, captions)
    mask = np.arange(tokens)[None] < lengths[:, None]
    ids_j, mask_j = jnp.asarray(ids), jnp.asarray(mask)
    ids_t, mask_t = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64))

    def run_ours():
        return jax.block_until_ready(ours(ids_j, mask_j))

    def run_torch():
        with torch.inference_mode():
            return hf(input_ids=ids_t, attention_mask=mask_t).last_hidden_state

    diff = float(np.abs(np.asarray(run_ours()) - run_torch().numpy())[mask].max())
    row = _bench_pair(f"t5-v1.1-small encoder, {captions} x {tokens} tokens", run_ours, run_torch, reps)
    params = sum(p.numel() for p in hf.parameters())
    return dict(row, diff=diff, load=load_s, params=params)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--captions", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args(argv)
    print(f"jax {jax.__version__} ({jax.default_backend()}, {jax.device_count()} device(s)), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs; float32; matmul precision "
          f"{jax.config.jax_default_matmul_precision or 'default'}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [bench_wav2vec2(tmp, args.seconds, args.reps), bench_t5(tmp, args.captions, args.tokens, args.reps)]
    print()
    print("| encoder, input | params | omnijax median s | transformers median s | ratio torch/omnijax "
          "| omnijax first call s | load s | max abs diff |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['params'] / 1e6:.1f} M | {r['ours']:.3f} | {r['torch']:.3f} | {r['ratio']:.2f} "
              f"| {r['compile']:.1f} | {r['load']:.1f} | {r['diff']:.1e} |")
    print(f"\nmedians of {args.reps} alternating runs each; ratio > 1 means omnijax is faster.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
