"""The cached training example: its keys, dtypes and shapes, and its byte encoding.

One ArrayRecord record = one example = a msgpack map
    {"v": SCHEMA_VERSION, "features": {key: {"dtype": str, "shape": [..], "data": bytes}}}
Raw little-endian bytes + dtype + shape per feature: readable from any language, no
pickle, and a decoder can check every field before a batch is ever built.

Shapes (symbols are per example; a batch adds a leading B):
    latents     (F, h, w, z)      float32  normalised VAE latents (vae.normalize)
    ref_latent  (1, h, w, z)      float32  normalised latent of the reference frame
    audio       (T, Da)           float32  T = 1 + 4 (F - 1) video frames
    keypoints   (T, K, 3)         float32  pose keypoints (x, y as fractions of the frame,
                                           visibility), K = 13; the train step renders
                                           them into heatmaps on the device
    text        (L, Dt)           float32  frozen text-encoder states
    text_mask   (L,)              bool
    audio_ok    ()                bool     passed the audio-visual sync filter
    pose_ok     ()                bool     keypoints visible enough
"""

from __future__ import annotations

from typing import Mapping

import msgpack
import numpy as np

from omnijax.data.keypoints import NUM_KEYPOINTS

# 2: keypoints instead of (T, Hp, Wp, K) float16 heatmaps, which were 92% of a record's
#    bytes (a 17x64x64 window: 500 KB -> 48 KB) and most of the loader's host time
SCHEMA_VERSION = 2

# key -> (dtype, symbolic shape). Symbols are bound per example and checked for agreement.
FEATURES: dict[str, tuple[np.dtype, tuple[str | int, ...]]] = {
    "latents": (np.dtype(np.float32), ("F", "h", "w", "z")),
    "ref_latent": (np.dtype(np.float32), (1, "h", "w", "z")),
    "audio": (np.dtype(np.float32), ("T", "Da")),
    "keypoints": (np.dtype(np.float32), ("T", NUM_KEYPOINTS, 3)),
    "text": (np.dtype(np.float32), ("L", "Dt")),
    "text_mask": (np.dtype(np.bool_), ("L",)),
    "audio_ok": (np.dtype(np.bool_), ()),
    "pose_ok": (np.dtype(np.bool_), ()),
}
KEEP_KEYS = ("keep_ref", "keep_text", "keep_audio", "keep_pose")


def frames_for_latents(num_latent_frames: int) -> int:
    """F latent frames cover T = 1 + 4 (F - 1) video frames (the VAE's causal 4x)."""
    return 1 + 4 * (num_latent_frames - 1)


def validate(example: Mapping[str, np.ndarray], where: str = "example") -> dict[str, int]:
    """Check keys, dtypes and shapes; -> the bound symbols {F, h, w, z, T, ...}."""
    missing = set(FEATURES) - set(example)
    extra = set(example) - set(FEATURES)
    if missing or extra:
        raise ValueError(f"{where}: missing keys {sorted(missing)}, unexpected keys {sorted(extra)}")
    dims: dict[str, int] = {}
    for key, (dtype, shape) in FEATURES.items():
        arr = np.asarray(example[key])
        if arr.dtype != dtype:
            raise ValueError(f"{where}: {key} must be {dtype}, got {arr.dtype}")
        if arr.ndim != len(shape):
            raise ValueError(f"{where}: {key} must have shape {shape}, got {arr.shape}")
        for sym, n in zip(shape, arr.shape):
            if isinstance(sym, int):
                if n != sym:
                    raise ValueError(f"{where}: {key} must have shape {shape}, got {arr.shape}")
            elif dims.setdefault(sym, n) != n:
                raise ValueError(f"{where}: {key} has {sym}={n} but another feature has {sym}={dims[sym]}")
    if dims["T"] != frames_for_latents(dims["F"]):
        raise ValueError(f"{where}: audio/pose have T={dims['T']} frames but latents F={dims['F']} "
                         f"need T = 1 + 4(F-1) = {frames_for_latents(dims['F'])}")
    return dims


def encode(example: Mapping[str, np.ndarray]) -> bytes:
    """Validated example -> record bytes."""
    validate(example)
    feats = {}
    for key, (dtype, _) in FEATURES.items():
        arr = np.asarray(example[key], dtype)  # (ascontiguousarray would make a 0-d array 1-d)
        feats[key] = {"dtype": dtype.str, "shape": list(arr.shape), "data": arr.tobytes(order="C")}
    return msgpack.packb({"v": SCHEMA_VERSION, "features": feats}, use_bin_type=True)


def decode(record: bytes) -> dict[str, np.ndarray]:
    """Record bytes -> example of numpy arrays (writable copies), validated."""
    try:
        blob = msgpack.unpackb(record, raw=False)
    except Exception as e:  # msgpack raises several unrelated types for corrupt bytes
        raise ValueError(f"record is not a valid msgpack example ({type(e).__name__}: {e})") from None
    if not isinstance(blob, dict) or blob.get("v") != SCHEMA_VERSION:
        raise ValueError(f"record has schema version {blob.get('v') if isinstance(blob, dict) else None}, "
                         f"this reader knows {SCHEMA_VERSION}")
    out = {}
    for key, f in blob["features"].items():
        arr = np.frombuffer(f["data"], np.dtype(f["dtype"]))
        out[key] = arr.reshape(tuple(f["shape"])).copy()
    validate(out, "record")
    return out


def bucket_name(frames: int, height: int, width: int) -> str:
    """Directory name of a shape bucket: video frames T x height x width."""
    return f"t{frames}_h{height}_w{width}"


def parse_bucket(spec: str) -> tuple[int, int, int]:
    """'17x64x64' or 't17_h64_w64' -> (frames, height, width), checking the VAE's constraints."""
    s = spec.strip()
    try:
        if s.startswith("t"):
            parts = [int(p[1:]) for p in s.split("_")]
        else:
            parts = [int(p) for p in s.lower().split("x")]
        t, h, w = parts
    except ValueError:
        raise ValueError(f"bucket {spec!r} must look like FRAMESxHEIGHTxWIDTH, e.g. 17x64x64") from None
    if (t - 1) % 4 or t < 1:
        raise ValueError(f"bucket {spec!r}: frames must be 1 + 4k, got {t}")
    if h % 16 or w % 16:
        raise ValueError(f"bucket {spec!r}: height and width must be multiples of 16 "
                         f"(VAE /8 then 2x2 patches), got {h}x{w}")
    return t, h, w
