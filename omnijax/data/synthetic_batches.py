"""In-memory batch sources for training without preprocessed shards.

Every source here is deterministic in (seed, batch index) and checkpointable like a grain
iterator (`get_state() -> bytes`, `set_state(bytes)`), so a resumed run sees exactly the
batches an uninterrupted run would have seen. Each process builds the global batch and
keeps its own rows (`pipeline.local_rows`: the rows its devices hold under the batch
sharding), so an N-process run trains on the same global batches as a 1-process run.

    IndexedBatches      `make(index) -> global batch` as a checkpointable iterator of rows
    synthetic_latents   the cached-example schema (omnijax.data.schema) with random
                        features + curriculum keep masks: drives the MMDiT objective
    synthtalk_videos    SynthTalk frames rendered on the fly: drives the VAE objective
"""

from __future__ import annotations

import json
from typing import Callable

import numpy as np

from omnijax.data import curriculum


class IndexedBatches:
    """Iterator of process-local batches `make(index) -> global batch dict`, sliced to rows."""

    def __init__(self, make: Callable[[int], dict[str, np.ndarray]], rows: tuple[int, int],
                 nan_at: tuple[int, ...] = (), nan_key: str | None = None):
        self._make = make
        self._rows = rows
        self._next = 0
        # Fault injection for the non-finite guard (config data.inject_nan_at).
        self._nan_at = set(int(i) for i in nan_at)
        self._nan_key = nan_key

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self._make(self._next)
        if self._next in self._nan_at:
            batch[self._nan_key] = np.full_like(batch[self._nan_key], np.nan)
        self._next += 1
        lo, hi = self._rows
        return {k: v[lo:hi] for k, v in batch.items()}

    # grain-compatible checkpointing (grain's CheckpointHandler calls these)
    def get_state(self) -> bytes:
        return json.dumps({"next": self._next}).encode()

    def set_state(self, state: bytes) -> None:
        self._next = int(json.loads(state.decode() if isinstance(state, bytes) else state)["next"])

    def start_prefetch(self) -> None:
        pass


def synthetic_latents(*, seed: int, batch: int, frames: int, height: int, width: int,
                      channels: int, audio_dim: int, keypoints: int,
                      text_len: int, text_dim: int, stage, audio_ok_rate: float = 0.8,
                      pose_ok_rate: float = 0.7) -> Callable[[int], dict[str, np.ndarray]]:
    """`make(index)`: one global batch in the cached-example schema plus keep masks."""
    T = 1 + 4 * (frames - 1)

    def make(index: int) -> dict[str, np.ndarray]:
        r = np.random.default_rng([seed, index])
        latents = r.standard_normal((batch, frames, height, width, channels), np.float32)
        out = {
            "latents": latents,
            "ref_latent": (latents[:, :1] + 0.1 * r.standard_normal(latents[:, :1].shape)).astype(np.float32),
            "audio": r.standard_normal((batch, T, audio_dim), np.float32),
            # keypoints anywhere in the frame (fractions of it), 90% of them visible
            "keypoints": np.concatenate(
                [r.random((batch, T, keypoints, 2), np.float32),
                 (r.random((batch, T, keypoints, 1)) < 0.9).astype(np.float32)], axis=-1),
            "text": r.standard_normal((batch, text_len, text_dim), np.float32),
            "text_mask": np.arange(text_len)[None] < r.integers(1, text_len + 1, (batch, 1)),
            "audio_ok": r.random(batch) < audio_ok_rate,
            "pose_ok": r.random(batch) < pose_ok_rate,
        }
        out.update(curriculum.keep_masks(stage, out["audio_ok"], out["pose_ok"],
                                         np.random.default_rng([seed, index, 1])))
        return out

    return make


def synthtalk_videos(*, seed: int, batch: int, frames: int, height: int, width: int,
                     framing: str = "full", mouth_scale: float = 1.0) -> Callable[[int], dict[str, np.ndarray]]:
    """`make(index)`: {'video': (B, T, H, W, 3) float32 in [-1, 1]} of SynthTalk people in
    `framing`. Half of the clips open the mouth at random every frame (the hardest case for
    4x temporal compression), half smoothly, as speech does."""
    from omnijax.data import synthetic as st
    from omnijax.data import synthetic_render as sr

    def clip(r: np.random.Generator) -> np.ndarray:
        ident = st.sample_identity(r)
        opening = np.clip(r.random(frames), 0, 1)
        if r.random() < 0.5:
            kernel = np.hanning(7)
            opening = np.convolve(np.pad(opening, 3, mode="edge"), kernel / kernel.sum(), "valid")
            opening = np.clip((opening - opening.min()) / max(np.ptp(opening), 1e-6), 0, 1)
        motion = sr.body_motion(r, frames, 25.0, height, width, ident, opening, framing=framing,
                                mouth_scale=mouth_scale)
        imgs = [sr.render_frame(i, height, width, ident, motion, None) for i in range(frames)]
        return np.stack(imgs).astype(np.float32) / 127.5 - 1.0

    def make(index: int) -> dict[str, np.ndarray]:
        r = np.random.default_rng([seed, index])
        return {"video": np.stack([clip(r) for _ in range(batch)])}

    return make
