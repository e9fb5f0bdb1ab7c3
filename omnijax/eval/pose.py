"""Pose from pixels: are the generated hands where the driving keypoints put them?

SynthTalk draws hands in `HAND_COLOR`, a saturated green that no background or shirt can
take (their saturation is at most 0.35, so G - max(R, B) <= 0.35 * 255 there; the glove
reaches 170). A hand is found as a connected blob of strong green dominance, and placed at
its green-weighted centroid: blur spreads the green symmetrically around the hand, so the
centroid survives the blur of a VAE decoder that lowers every single pixel.

Points are `(x, y)` in pixels of the frame with pixel (i, j) spanning [j, j+1) x [i, i+1),
as the keypoints are (the renderer draws the glove centred on the wrist keypoint).
Hand order follows the keypoints: 0 = the person's right hand (`r_wrist`, usually on the
image left), 1 = the left hand (`l_wrist`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from omnijax.data import keypoints as kpt

WRISTS = (kpt.INDEX["r_wrist"], kpt.INDEX["l_wrist"])
_MASK = 0.4  # green dominance (G - max(R, B)) / 255 a pixel needs to seed a hand blob
_HAND_RADIUS = 0.045  # x H: the radius SynthTalk draws a glove with
_MIN_MASS = 0.2  # a blob needs this fraction of a whole glove's green mass to count


def green_dominance(frames: np.ndarray) -> np.ndarray:
    """uint8 `(..., 3)` -> (G - max(R, B)) / 255, `(...)` float32 in [-1, 1]."""
    f = np.asarray(frames, np.float32) / 255.0
    return f[..., 1] - np.maximum(f[..., 0], f[..., 2])


def hand_positions(frames: np.ndarray) -> np.ndarray:
    """Frames `(T, H, W, 3)` uint8 -> hand centres `(T, 2, 2)` float32 (hand, xy); NaN = not found.

    Per frame: blobs of green dominance > 0.4 (grown by a pixel to take in the soft edge),
    the two heaviest with at least a fifth of a glove's green mass are hands; two hands are
    told apart by x (the person's right hand is on the image left), a lone one by which
    half of the frame it is in. Two touching hands merge into one blob (one hand found)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 (T, H, W, 3), got shape {frames.shape}")
    T, H, W = frames.shape[:3]
    g = green_dominance(frames)
    glove = np.pi * (_HAND_RADIUS * H) ** 2 * green_dominance(np.array([[30, 230, 60]], np.uint8))[0]
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5
    out = np.full((T, 2, 2), np.nan, np.float32)
    for t in range(T):
        labels, n = ndimage.label(ndimage.binary_dilation(g[t] > _MASK))
        if n == 0:
            continue
        w = np.clip(g[t], 0.0, None).astype(np.float64)
        idx = np.arange(1, n + 1)
        mass = ndimage.sum_labels(w, labels, idx)
        cx = ndimage.sum_labels(w * xs, labels, idx) / np.maximum(mass, 1e-9)
        cy = ndimage.sum_labels(w * ys, labels, idx) / np.maximum(mass, 1e-9)
        keep = [i for i in np.argsort(-mass)[:2] if mass[i] >= _MIN_MASS * glove]
        if len(keep) == 2:
            keep = sorted(keep, key=lambda i: cx[i])
            for hand, i in enumerate(keep):
                out[t, hand] = (cx[i], cy[i])
        elif len(keep) == 1:
            i = keep[0]
            out[t, 0 if cx[i] < W / 2 else 1] = (cx[i], cy[i])
    return out


def _match(found: np.ndarray, wrists: np.ndarray) -> np.ndarray:
    """One frame: found `(2, 2)` (NaN rows absent), wrists `(2, 2)` (NaN rows not visible)
    -> distance per wrist `(2,)`, NaN where no hand was matched to it.

    Matching is label-free (the cheaper of the two pairings), so a hand that crossed the
    midline, or a side guessed wrongly for a lone hand, is measured where it is."""
    best_key, best = None, None
    for perm in ((0, 1), (1, 0)):
        d = np.linalg.norm(found[list(perm)] - wrists, axis=1)
        key = (-int(np.isfinite(d).sum()), float(np.nansum(d)))  # most matches, then nearest
        if best_key is None or key < best_key:
            best_key, best = key, d
    return best


def pose_error(frames: np.ndarray, keypoints: np.ndarray) -> dict:
    """Frames `(T, H, W, 3)` uint8 + driving keypoints `(T, 13, 3)` (x, y, visibility) ->

    {"error_px": mean distance (pixels) from each visible wrist to the hand found for it,
                 over the (frame, wrist) pairs that have one (NaN if none),
     "found": fraction of visible (frame, wrist) pairs with a hand found for them,
     "visible": number of visible (frame, wrist) pairs}.
    Read the two together: a video without hands has no error, only found = 0."""
    frames = np.asarray(frames)
    kp = kpt.check_keypoints(keypoints, "keypoints")
    if frames.ndim != 4 or frames.shape[0] != kp.shape[0]:
        raise ValueError(f"frames {frames.shape} and keypoints {kp.shape} must be (T, H, W, 3) and "
                         f"(T, {kpt.NUM_KEYPOINTS}, 3) with the same T")
    hands = hand_positions(frames).astype(np.float64)
    wr = kp[:, list(WRISTS)].astype(np.float64)  # (T, 2, 3)
    pts = np.where(wr[..., 2:3] > 0.5, wr[..., :2], np.nan)
    dist = np.stack([_match(hands[t], pts[t]) for t in range(kp.shape[0])]) if kp.shape[0] else np.zeros((0, 2))
    visible = int(np.isfinite(pts[..., 0]).sum())
    matched = np.isfinite(dist)
    return {"error_px": float(dist[matched].mean()) if matched.any() else float("nan"),
            "found": float(matched.sum() / visible) if visible else 0.0,
            "visible": visible}


def pose_error_px(frames: np.ndarray, keypoints: np.ndarray) -> float:
    """Mean pixel distance between the hands found in `frames` and the visible wrists of
    `keypoints` (see `pose_error` for the fraction found, which belongs with it)."""
    return pose_error(frames, keypoints)["error_px"]
