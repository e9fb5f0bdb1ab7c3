"""The 13 body keypoints every part of omnijax agrees on, their sidecar file, and heatmaps.

A keypoint is `(x, y, visibility)` in pixels of the clip's own frame; visibility is 0 (not
seen: occluded, out of frame or not detected) or 1. A clip's keypoints are `(T, 13, 3)`
float32, stored next to the video as `<clip>.keypoints.json`.
"""

from __future__ import annotations

import json
import os

import numpy as np

# Order is the channel order of the pose heatmaps (pose_channels = 13).
NAMES: tuple[str, ...] = (
    "nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "l_hip", "mouth_top", "mouth_bottom", "chin",
)
NUM_KEYPOINTS = len(NAMES)
INDEX = {name: i for i, name in enumerate(NAMES)}
# Limbs drawn by renderers / visualisers (pairs of keypoint names).
SKELETON: tuple[tuple[str, str], ...] = (
    ("neck", "nose"), ("neck", "r_shoulder"), ("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"),
    ("neck", "l_shoulder"), ("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"),
    ("r_shoulder", "r_hip"), ("l_shoulder", "l_hip"), ("mouth_top", "mouth_bottom"),
)

SIDECAR_SUFFIX = ".keypoints.json"


def sidecar_path(video_path: str | os.PathLike) -> str:
    """`clips/000001.mp4` -> `clips/000001.keypoints.json`."""
    return os.path.splitext(os.fspath(video_path))[0] + SIDECAR_SUFFIX


def check_keypoints(kp: np.ndarray, where: str = "keypoints") -> np.ndarray:
    kp = np.asarray(kp, np.float32)
    if kp.ndim != 3 or kp.shape[1:] != (NUM_KEYPOINTS, 3):
        raise ValueError(f"{where}: expected (T, {NUM_KEYPOINTS}, 3) keypoints, got {kp.shape}")
    if not np.isfinite(kp).all():
        raise ValueError(f"{where}: keypoints contain NaN/inf")
    return kp


def save_keypoints(path: str | os.PathLike, kp: np.ndarray, fps: float) -> None:
    kp = check_keypoints(kp, os.fspath(path))
    blob = {"fps": float(fps), "names": list(NAMES),
            "frames": np.round(kp, 2).tolist()}
    with open(path, "w") as f:
        json.dump(blob, f, separators=(",", ":"))


def load_keypoints(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """-> keypoints `(T, 13, 3)` float32 and their fps. Errors name the file."""
    path = os.fspath(path)
    try:
        with open(path) as f:
            blob = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: keypoint sidecar not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: keypoint sidecar is not valid JSON ({e})") from None
    if list(blob.get("names", [])) != list(NAMES):
        raise ValueError(f"{path}: keypoint names {blob.get('names')} differ from {list(NAMES)}")
    return check_keypoints(np.asarray(blob["frames"], np.float32), path), float(blob["fps"])


def visible_fraction(kp: np.ndarray, height: int | None = None, width: int | None = None) -> float:
    """Fraction of (frame, keypoint) entries that are visible.

    Given the frame size, an invisible entry whose position lies outside the frame is out of
    shot (a half-body framing never shows the hips), not lost, and is left out of the count:
    a framing alone must not make a clip's pose unusable. A lost or occluded keypoint keeps
    a position inside the frame (a detector's (0, 0) too) and counts as not visible.
    """
    kp = check_keypoints(kp)
    if not kp.shape[0]:
        return 0.0
    visible = kp[..., 2] > 0.5
    counted = np.ones_like(visible)
    if height is not None and width is not None:
        x, y = kp[..., 0], kp[..., 1]
        in_frame = (x >= 0) & (x < width) & (y >= 0) & (y < height)
        counted = visible | in_frame
    n = counted.sum()
    return float(visible.sum() / n) if n else 0.0


def heatmaps(kp, height: int, width: int, sigma: float, xp=np):
    """Keypoints `(..., T, K, 3)` already in heatmap pixel units -> `(..., T, height, width, K)`
    float32.

    One unit-peak Gaussian per visible keypoint, centred on pixel centres (pixel (i, j) spans
    [j, j+1) x [i, i+1), so its centre is j + 0.5); a keypoint that is not visible gives an
    all-zero channel, which the pose guider reads as "no information". `xp`: numpy (the
    sampler, evaluation) or jax.numpy (the training step renders the cached keypoints on the
    device: one formula for both).
    """
    kp = xp.asarray(kp, xp.float32)
    ys = xp.arange(height, dtype=xp.float32) + 0.5
    xs = xp.arange(width, dtype=xp.float32) + 0.5
    gy = xp.exp(-((ys - kp[..., 1:2]) ** 2) / (2 * sigma**2))  # (..., T, K, H)
    gx = xp.exp(-((xs - kp[..., 0:1]) ** 2) / (2 * sigma**2))  # (..., T, K, W)
    vis = (kp[..., 2] > 0.5).astype(xp.float32)  # (..., T, K)
    # separable Gaussian: outer product per (t, k), then channels last
    return xp.einsum("...kh,...kw,...k->...hwk", gy, gx, vis).astype(xp.float32)


def normalize(kp: np.ndarray, height: int, width: int) -> np.ndarray:
    """Keypoints in pixels of a `height x width` frame -> fractions of the frame (x / width,
    y / height; visibility unchanged): what the training cache stores, so the heatmap
    resolution is the model's choice (`heatmaps_from_normalized`), not the cache's."""
    kp = np.asarray(kp, np.float32).copy()
    kp[..., 0] /= width
    kp[..., 1] /= height
    return kp


def heatmaps_from_normalized(kp, height: int, width: int, sigma_frac: float, xp=np):
    """Normalised keypoints `(..., T, K, 3)` (`normalize`) -> heatmaps `(..., T, height, width,
    K)` with sigma = `sigma_frac` x height pixels (MMDiTConfig.pose_sigma)."""
    kp = xp.asarray(kp, xp.float32)
    scale = xp.asarray([width, height, 1.0], xp.float32)
    return heatmaps(kp * scale, height, width, sigma_frac * height, xp=xp)
