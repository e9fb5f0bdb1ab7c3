"""Shared, cached test data for the data tests (SynthTalk sets, a saved tiny VAE, record caches).

Each helper writes under a directory it is given (a session temp dir) and reuses what is
already there, so several test modules in one pytest worker render SynthTalk only once.
"""

from __future__ import annotations

import json
import os

import numpy as np

from omnijax.data import schema
from omnijax.data.keypoints import NUM_KEYPOINTS


def synth_set(root, name: str, **overrides) -> str:
    """A SynthTalk set rendered once into root/name (2 s clips at 64 px unless overridden)."""
    from omnijax.data.synthetic import SynthConfig, generate

    out = os.path.join(root, name)
    if not os.path.exists(os.path.join(out, "truth.json")):
        cfg = dict(clips=6, seed=0, size=64, fps=25.0, seconds=2.0)
        cfg.update(overrides)
        generate(SynthConfig(**cfg), out, progress=False)
    return out


def tiny_vae_dir(root) -> str:
    """A tiny VAE with seeded random weights, saved with module_io (what preprocess loads)."""
    from omnijax.data.preprocess import build_vae
    from omnijax.models import vae as vae_lib

    path = os.path.join(root, "tiny_vae")
    if not os.path.exists(os.path.join(path, "config.json")):
        vae_lib.save(path, build_vae("tiny", 0))
    return path


def fake_example(rec_id: int, frames: int, height: int, width: int, *, audio_ok=True, pose_ok=True,
                 z: int = 16) -> dict[str, np.ndarray]:
    """A schema-valid example whose id is readable back: text[0, 0] == rec_id."""
    F = 1 + (frames - 1) // 4
    rng = np.random.default_rng(rec_id)
    text = np.zeros((8, 4), np.float32)
    text[0, 0] = rec_id
    return {
        "latents": rng.standard_normal((F, height // 8, width // 8, z)).astype(np.float32),
        "ref_latent": rng.standard_normal((1, height // 8, width // 8, z)).astype(np.float32),
        "audio": rng.standard_normal((frames, 8)).astype(np.float32),
        "keypoints": np.concatenate([rng.random((frames, NUM_KEYPOINTS, 2)),
                                     np.ones((frames, NUM_KEYPOINTS, 1))], -1).astype(np.float32),
        "text": text, "text_mask": np.arange(8) < 3,
        "audio_ok": np.bool_(audio_ok), "pose_ok": np.bool_(pose_ok),
    }


def fake_cache(out: str, buckets: dict[str, int], shards_per_bucket: int = 2,
               audio_ok_fraction: float = 1.0) -> dict[str, list[int]]:
    """Write a record cache (shards + manifest) without running preprocess.

    -> bucket name -> record ids it holds. Ids are unique across buckets."""
    from omnijax.data.preprocess import write_records

    os.makedirs(out, exist_ok=True)
    manifest = {"schema_version": schema.SCHEMA_VERSION, "buckets": {}}
    ids: dict[str, list[int]] = {}
    next_id = 0
    for spec, n in buckets.items():
        T, h, w = schema.parse_bucket(spec)
        name = schema.bucket_name(T, h, w)
        os.makedirs(os.path.join(out, name), exist_ok=True)
        ids[name] = list(range(next_id, next_id + n))
        next_id += n
        shards = []
        for s, chunk in enumerate(np.array_split(np.asarray(ids[name]), shards_per_bucket)):
            rel = os.path.join(name, f"shard-{s:05d}.array_record")
            write_records(os.path.join(out, rel), [
                schema.encode(fake_example(int(i), T, h, w, audio_ok=(int(i) % 10) < 10 * audio_ok_fraction))
                for i in chunk])
            shards.append(rel)
        manifest["buckets"][name] = {"frames": T, "height": h, "width": w, "records": n, "shards": shards}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return ids


# What a user's shell has, for tests that run a command in a subprocess: one CPU device
# (conftest forces 8 for the sharding tests, and the demo's batch of 2 does not split over 8).
USER_ENV = dict({k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, JAX_PLATFORMS="cpu")
