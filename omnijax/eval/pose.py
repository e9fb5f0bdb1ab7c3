"""Pose from pixels: are the generated hands where the driving keypoints put them?

SynthTalk draws hands in `HAND_COLOR`, a saturated green that no background or shirt can
take (their saturation is at most 0.35, so G - max(R, B) <= 0.35 * 255 there; the glove
reaches 170). A hand is found as a connected blob of strong green dominance, and placed at
its green-weighted centroid: blur spreads the green symmetrically around the hand, so the
centroid survives the blur of a VAE decoder that lowers every single pixel. A glove cut by
the frame's edge (the head close-up's hands come and go at the bottom) has lost that
symmetry and is placed at the centre of the circle through its visible outline instead.
Nothing depends on how large the person is in the frame but the noise floor on a blob's
mass, taken from the smallest glove SynthTalk draws (the full shot's).

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


def _crossings(g: np.ndarray, level: float, inside: np.ndarray) -> np.ndarray:
    """Sub-pixel points `(N, 2)` (x, y) where `g (H, W)` crosses `level` between two
    4-neighbours, one of them in the `inside (H, W)` mask. Only pixel pairs within the
    frame count: where a glove is cut by the frame's edge there is no crossing."""
    pts = []
    for axis in (0, 1):
        a = g[:-1] if axis == 0 else g[:, :-1]
        b = g[1:] if axis == 0 else g[:, 1:]
        ins = (inside[:-1] | inside[1:]) if axis == 0 else (inside[:, :-1] | inside[:, 1:])
        i, j = np.nonzero(((a >= level) != (b >= level)) & ins)
        f = (level - a[i, j]) / (b[i, j] - a[i, j])  # in [0, 1] from the first pixel's centre
        x, y = j + 0.5 + (f if axis == 1 else 0.0), i + 0.5 + (f if axis == 0 else 0.0)
        pts.append(np.stack([x, y], -1))
    return np.concatenate(pts)


def _cut_glove_centre(g: np.ndarray, blob: np.ndarray) -> tuple[float, float] | None:
    """Centre (x, y) of a glove cut by the frame's edge, or None if it cannot be told.

    The glove is a disc; its visible outline (the half-level crossings of green
    dominance, blur moves them little) is an arc of the circle, fitted by least squares
    (Kasa). The centroid of what is left of a cut disc lies inwards of its centre by up
    to 0.42 radii, the 1-3 px by which hands at the bottom edge of a close-up would read."""
    peak = float(g[blob].max())
    pts = _crossings(g, 0.5 * peak, blob)
    if len(pts) < 6:
        return None
    x, y = pts[:, 0], pts[:, 1]
    A = np.stack([x, y, np.ones_like(x)], -1)
    (p, q, c), *_ = np.linalg.lstsq(A, x * x + y * y, rcond=None)
    cx, cy = 0.5 * p, 0.5 * q
    r2 = c + cx * cx + cy * cy
    H, W = g.shape
    # an arc too short to fit (a sliver of a glove whose centre is far outside) says little
    if not r2 > 0 or np.sqrt(r2) > 0.25 * max(H, W) or not (-np.sqrt(r2) < cx < W + np.sqrt(r2)) \
            or not (-np.sqrt(r2) < cy < H + np.sqrt(r2)):
        return None
    return float(cx), float(cy)


def hand_positions(frames: np.ndarray) -> np.ndarray:
    """Frames `(T, H, W, 3)` uint8 -> hand centres `(T, 2, 2)` float32 (hand, xy); NaN = not found.

    Per frame: blobs of green dominance > 0.4 (grown by a pixel to take in the soft edge),
    the two heaviest with at least a fifth of a glove's green mass are hands; two hands are
    told apart by x (the person's right hand is on the image left), a lone one by which
    half of the frame it is in. Two touching hands merge into one blob (one hand found).
    A hand is placed at its green-weighted centroid, or, when the frame's edge cuts its
    glove (as in the close-up, where hands come and go at the bottom), at the centre of
    the circle through its visible outline.

    The glove sizes scale with the framing (radius 0.045 x the full shot's height in
    pixels): the fifth is of the full shot's glove, the smallest SynthTalk draws at this
    frame height, so the threshold is a noise floor in every framing."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 (T, H, W, 3), got shape {frames.shape}")
    T, H, W = frames.shape[:3]
    g = green_dominance(frames)
    glove = np.pi * (_HAND_RADIUS * H) ** 2 * green_dominance(np.array([[30, 230, 60]], np.uint8))[0]
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5
    edge = np.zeros((H, W), bool)
    edge[[0, -1], :] = edge[:, [0, -1]] = True
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
        for i in keep:
            blob = labels == i + 1
            # cut by the edge: the glove itself (over half its peak green), not a blurred rim
            if (g[t][blob & edge] > 0.5 * g[t][blob].max()).any():
                centre = _cut_glove_centre(g[t], blob)
                if centre is not None:
                    cx[i], cy[i] = centre
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
