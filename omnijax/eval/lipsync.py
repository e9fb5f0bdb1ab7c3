"""Lip-sync from pixels: does the generated mouth open with the speech? (weight-free)

`sync.py`'s dark-pixel proxy counts pixels below an absolute luma threshold; a VAE-decoded
32-64 px frame is blurry enough to lift the whole mouth above it, so it reads 0 on every
decoded video. This module measures the mouth *darkness mass* in a box instead, which
blur only spreads around without removing:

1. `mouth_box(ref)` finds the mouth once, in the reference image (or the first frame):
   the head's vertical mirror axis (`face_axis`), then the strongest dark dip down that
   axis, darker than the skin both above and below it (`mouth_profile`). A closed mouth
   is still a 1 px dark line, so the (usually closed-mouth) reference photo is enough;
   the axis keeps away the look-alikes of a blurred closed mouth (the corners where long
   hair, skin and background meet come in mirrored pairs off the axis).
2. `head_shifts` follows the head per frame: normalised cross-correlation of the
   reference head (mouth masked out, so opening does not pull the match) over integer
   shifts, refined to sub-pixel. This makes the signal tolerant to head sway and to a
   slightly misplaced generated head.
3. `mouth_signal`: per frame, the mean darkness (1 - luma) over the tracked box, a box
   larger than the widest-open mouth: linear in the pixels, so blur only moves dark mass
   around inside the box and sub-pixel sway changes nothing.
4. `lipsync`: Pearson correlation of that signal with the audio loudness envelope (RMS per
   video frame) at every lag in +-max_lag frames -> the peak, its offset and the
   confidence (peak minus the median over lags, as Sync-C is median minus min distance).

Offset convention (as `sync.lagged_correlation`): `offset = k > 0` means the mouth trails
the audio by k frames (the mouth moves k frames after the sound); negative: it leads.

Box geometry is in fractions of the frame height (SynthTalk draws people at a fixed scale
of the frame); boxes are `(y0, y1, x0, x1)` half-open integer pixel ranges.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from omnijax.data.sync import loudness_envelope, luma

# Where a SynthTalk mouth is, as a fraction of the frame height H: the head centre sits at
# 0.30 H (+-0.02 H of sway) and the mouth 0.55 face radii (0.07-0.09 H) lower.
_MOUTH_Y = 0.38
_SEARCH = (0.25, 0.55)  # rows (x H) the mouth is looked for in
_MIN_CONTRAST = 0.01  # luma units: a weaker dip is no mouth (a flat image, no face)


def _check_frames(frames: np.ndarray, where: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{where}: expected uint8 (T, H, W, 3) frames, got shape {frames.shape}")
    return frames


def _check_image(image: np.ndarray, where: str = "reference") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{where}: expected a uint8 (H, W, 3) image, got shape {image.shape}")
    return image


def face_axis(image: np.ndarray) -> float:
    """Image `(H, W, 3)` -> x of the head's vertical mirror axis (pixels, continuous).

    The axis (on a half-pixel grid within W/2 +- 0.1 H) where the head region (rows
    0.1-0.45 H, +-0.15 H around the axis: hair, face, long hair) best matches its own
    mirror image. The mouth sits on it; the look-alikes of a blurred closed mouth (corners
    where hair, skin and background meet) come in mirrored pairs off it."""
    img = _check_image(image).astype(np.float64)
    H, W = img.shape[:2]
    region = img[int(0.1 * H):int(np.ceil(0.45 * H))]
    half = max(2, int(round(0.15 * H)))
    best, best_axis = np.inf, W / 2
    for twice in range(int(np.floor(W - 0.2 * H)), int(np.ceil(W + 0.2 * H)) + 1):
        axis = twice / 2  # pixel j mirrors to j' = 2 axis - 1 - j (centres at j + 0.5)
        j = np.arange(int(np.floor(axis - half)), int(np.ceil(axis + half)))
        jm = twice - 1 - j
        ok = (j >= 0) & (j < W) & (jm >= 0) & (jm < W)
        if ok.sum() < half:
            continue
        err = np.abs(region[:, j[ok]] - region[:, jm[ok]]).mean()
        # prefer the centre on ties (a flat image)
        err += 1e-6 * abs(axis - W / 2)
        if err < best:
            best, best_axis = err, axis
    return float(best_axis)


def mouth_profile(image: np.ndarray, axis: float) -> np.ndarray:
    """-> `(H,)` mouth evidence down the face axis (luma units, >= 0, prior-weighted).

    How much darker each row (averaged over +-0.03 H around the axis) is than the lightest
    rows within 0.07 H above it and within 0.07 H below it, the darker of the two: a dip
    (a mouth, closed or open) scores, a one-sided edge (hairline, chin) does not. A soft
    prior on the height (mouth at 0.38 H in SynthTalk, the nose a little higher) breaks
    the rare tie with the nose."""
    img = _check_image(image)
    H, W = img.shape[:2]
    y = luma(img[None])[0].astype(np.float64)
    w = max(1, int(round(0.03 * H)))
    c = int(np.floor(axis))
    cols = y[:, max(0, c - w):min(W, c + w + 1)]
    prof = cols.mean(axis=1)
    k = max(2, int(round(0.07 * H)))
    pad = np.pad(prof, k, mode="edge")
    above = np.stack([pad[k - i:k - i + H] for i in range(1, k + 1)]).max(axis=0)
    below = np.stack([pad[k + i:k + i + H] for i in range(1, k + 1)]).max(axis=0)
    dip = np.clip(np.minimum(above, below) - prof, 0.0, None)
    rows = (np.arange(H) + 0.5) / H
    y0, y1 = _SEARCH
    prior = np.exp(-0.5 * ((rows - _MOUTH_Y) / 0.05) ** 2)
    return np.where((rows >= y0) & (rows <= y1), dip * (0.5 + 0.5 * prior), 0.0)


def mouth_box(reference: np.ndarray) -> tuple[int, int, int, int]:
    """Reference image `(H, W, 3)` uint8 -> mouth box `(y0, y1, x0, x1)` (half-open pixels).

    The mouth is the strongest dark dip down the head's mirror axis in rows 0.25-0.55 H.
    The box is centred on it and sized for the widest-open SynthTalk mouth plus a blur
    margin (half-height 0.04 H + 1 px, half-width 0.05 H + 1 px). Raises ValueError when no
    dip stands out (no face, a flat image)."""
    img = _check_image(reference)
    H, W = img.shape[:2]
    if H < 16 or W < 16:
        raise ValueError(f"reference: expected frames of at least 16x16 px to find a mouth, got {H}x{W}")
    axis = face_axis(img)
    prof = mouth_profile(img, axis)
    cy = int(np.argmax(prof))
    if prof[cy] < _MIN_CONTRAST:
        raise ValueError(
            f"reference: no mouth found (expected a dark horizontal mouth at least {_MIN_CONTRAST} luma "
            f"darker than the skin above and below it, on the face axis within rows "
            f"{_SEARCH[0]:.2f}-{_SEARCH[1]:.2f} H; the best dip was {prof[cy]:.3f} at x={axis:.1f})")
    cx = int(np.floor(axis))
    hh = int(np.ceil(0.04 * H)) + 1
    hw = int(np.ceil(0.05 * H)) + 1
    # axis through a pixel centre (x.5): odd-width box on that pixel; on a pixel edge: even
    x0, x1 = (cx - hw, cx + hw + 1) if axis > cx else (cx - hw, cx + hw)
    return (max(0, cy - hh), min(H, cy + hh + 1), max(0, x0), min(W, x1))


def _face_region(box: tuple[int, int, int, int], H: int, W: int) -> tuple[int, int, int, int]:
    """The head around a mouth box: hair top to below the chin, long hair to long hair."""
    y0, y1, x0, x1 = box
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    return (max(0, cy - int(round(0.25 * H))), min(H, cy + int(round(0.1 * H)) + 1),
            max(0, cx - int(round(0.17 * H))), min(W, cx + int(round(0.17 * H)) + 1))


def _subpixel(c_minus: np.ndarray, c0: np.ndarray, c_plus: np.ndarray) -> np.ndarray:
    """Vertex of the parabola through three samples, in [-0.5, 0.5] of the middle one."""
    curv = c_minus - 2 * c0 + c_plus
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(curv < -1e-12, 0.5 * (c_minus - c_plus) / curv, 0.0)
    return np.clip(d, -0.5, 0.5)


def head_shifts(frames: np.ndarray, reference: np.ndarray, box: tuple[int, int, int, int] | None = None,
                max_shift: int | None = None) -> np.ndarray:
    """Head translation of each frame vs the reference -> `(T, 2)` float (dy, dx) pixels.

    Normalised cross-correlation of the reference head (mouth box masked out, so an
    opening mouth does not pull the match) at integer shifts in +-max_shift px (default
    0.05 H rounded up; SynthTalk sways +-0.02 H), refined to sub-pixel by a parabola
    through the peak and its neighbours: at 32 px a whole-pixel error already moves half
    the mouth out of its box."""
    frames = _check_frames(frames)
    ref = _check_image(reference)
    if frames.shape[1:] != ref.shape:
        raise ValueError(f"frames {frames.shape[1:]} and reference {ref.shape} must have the same size")
    H, W = ref.shape[:2]
    box = mouth_box(ref) if box is None else box
    s = int(np.ceil(0.05 * H)) if max_shift is None else int(max_shift)
    fy0, fy1, fx0, fx1 = _face_region(box, H, W)
    y0, y1, x0, x1 = box
    mask = np.ones((fy1 - fy0, fx1 - fx0), bool)
    mask[y0 - fy0:y1 - fy0, x0 - fx0:x1 - fx0] = False
    tpl = luma(ref[None])[0][fy0:fy1, fx0:fx1][mask].astype(np.float64)
    tpl = (tpl - tpl.mean()) / (np.linalg.norm(tpl - tpl.mean()) + 1e-9)
    p = s + 1  # one more so the sub-pixel fit has neighbours at the search edge
    lum = np.pad(luma(frames).astype(np.float64), ((0, 0), (p, p), (p, p)), mode="edge")
    T = frames.shape[0]
    ncc = np.zeros((T, 2 * p + 1, 2 * p + 1))
    for i, dy in enumerate(range(-p, p + 1)):
        for j, dx in enumerate(range(-p, p + 1)):
            patch = lum[:, fy0 + p + dy:fy1 + p + dy, fx0 + p + dx:fx1 + p + dx][:, mask]
            patch = patch - patch.mean(axis=1, keepdims=True)
            ncc[:, i, j] = patch @ tpl / (np.linalg.norm(patch, axis=1) + 1e-9)
    inner = ncc[:, 1:-1, 1:-1].reshape(T, -1)
    # a flat frame correlates 0 everywhere: argmax of (ncc - tiny distance) picks no shift
    yy, xx = np.mgrid[-s:s + 1, -s:s + 1]
    k = np.argmax(inner - 1e-9 * (np.abs(yy) + np.abs(xx)).ravel(), axis=1)
    iy, ix = np.unravel_index(k, (2 * s + 1, 2 * s + 1))
    iy, ix, t = iy + 1, ix + 1, np.arange(T)
    fy = _subpixel(ncc[t, iy - 1, ix], ncc[t, iy, ix], ncc[t, iy + 1, ix])
    fx = _subpixel(ncc[t, iy, ix - 1], ncc[t, iy, ix], ncc[t, iy, ix + 1])
    return np.stack([iy - p + fy, ix - p + fx], axis=1)


def _sample(img: np.ndarray, box: tuple[int, int, int, int], dy: float, dx: float) -> np.ndarray:
    """Bilinear samples of `img (H, W)` on the pixel grid of `box` moved by (dy, dx)."""
    y0, y1, x0, x1 = box
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    return ndimage.map_coordinates(img, [yy + dy, xx + dx], order=1, mode="nearest")


def mouth_signal(frames: np.ndarray, reference: np.ndarray | None = None, track: bool = True) -> np.ndarray:
    """Frames `(T, H, W, 3)` uint8 -> mouth darkness per frame `(T,)` float32 in [0, 1].

    Mean of (1 - luma) over the mouth box, moved with the head (`head_shifts`, sampled
    bilinearly). It is linear in the pixels, so blur, which only spreads the dark mass
    around inside the box, leaves it unchanged. (Normalising by a skin patch was tried and
    dropped: at 32 px no skin patch is far enough from the mouth to stay clean.)
    Reference defaults to the first frame; `track=False` keeps the reference's box."""
    frames = _check_frames(frames)
    ref = frames[0] if reference is None else _check_image(reference)
    box = mouth_box(ref)
    shifts = head_shifts(frames, ref, box) if track else np.zeros((frames.shape[0], 2))
    lum = luma(frames).astype(np.float64)
    out = np.zeros(frames.shape[0], np.float32)
    for t, (dy, dx) in enumerate(shifts):
        out[t] = 1.0 - _sample(lum[t], box, dy, dx).mean()
    return out


def lag_correlations(env: np.ndarray, signal: np.ndarray, max_lag: int) -> np.ndarray:
    """corr(env[t], signal[t + lag]) for lag = -max_lag..max_lag -> `(2 max_lag + 1,)`.

    A constant signal (still mouth, silence) or an overlap under 3 frames correlates 0."""
    a = np.asarray(env, np.float64)
    b = np.asarray(signal, np.float64)
    n = min(a.size, b.size)
    out = np.zeros(2 * max_lag + 1)
    for i, lag in enumerate(range(-max_lag, max_lag + 1)):
        x = a[max(0, -lag): n - max(0, lag)]
        y = b[max(0, lag): n - max(0, -lag)]
        if x.size >= 3 and x.std() > 1e-8 and y.std() > 1e-8:
            out[i] = np.corrcoef(x, y)[0, 1]
    return out


def lipsync(frames: np.ndarray, wave: np.ndarray, sample_rate: int, fps: float = 25.0,
            ref: np.ndarray | None = None, max_lag: int = 12) -> dict:
    """Frames `(T, H, W, 3)` uint8 + mono audio `(N,)` -> lip-sync of the video.

    -> {"peak": max over lags of the Pearson correlation (in [-1, 1]; a still mouth: 0),
        "offset": its lag in frames (> 0: the mouth trails the audio),
        "confidence": peak - median correlation over lags}.
    `ref` is the reference image the mouth is found in (default: the first frame)."""
    frames = _check_frames(frames)
    wave = np.asarray(wave, np.float64)
    if wave.ndim != 1:
        raise ValueError(f"wave: expected a mono waveform (N,), got shape {wave.shape}")
    if max_lag < 0 or max_lag >= frames.shape[0] - 2:
        raise ValueError(f"max_lag must be in [0, T - 3] = [0, {frames.shape[0] - 3}], got {max_lag}")
    env = loudness_envelope(wave, sample_rate, fps, frames.shape[0])
    corr = lag_correlations(env, mouth_signal(frames, ref), max_lag)
    lags = np.arange(-max_lag, max_lag + 1)
    i = int(np.argmax(corr - 1e-12 * np.abs(lags)))  # ties (a still mouth: all 0) -> lag nearest 0
    return {"peak": float(corr[i]), "offset": i - max_lag,
            "confidence": float(corr[i] - np.median(corr))}
