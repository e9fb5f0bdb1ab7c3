"""Lip-sync from pixels: does the generated mouth open with the speech? (weight-free)

`sync.py`'s dark-pixel proxy counts pixels below an absolute luma threshold; a VAE-decoded
32-64 px frame is blurry enough to lift the whole mouth above it, so it reads 0 on every
decoded video. This module measures the mouth *darkness mass* in a box instead, which
blur only spreads around without removing:

1. `face_geometry(ref)` finds the face once, in the reference image (or the first frame):
   the head's vertical mirror axis (`face_axis`), the top of the head on it, and the mouth,
   the strongest dark dip down the axis below the top with the same skin above and below
   it (`mouth_profile`; a closed mouth is still a 1 px dark line). Top to mouth gives the
   face's size, and every other length (mouth box, head template, search ranges,
   `appearance`'s regions) is a multiple of it: SynthTalk's full, half and head framings
   (and anything in between) are measured alike.
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

Lengths are in face half-heights `ry` (the skin ellipse's vertical radius, `Face.ry`);
points are continuous pixel coordinates (pixel (i, j) spans [j, j+1) x [i, i+1)); boxes
are `(y0, y1, x0, x1)` half-open integer pixel ranges.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from omnijax.data.sync import loudness_envelope, luma

# The SynthTalk head in face half-heights ry (synthetic_render: the hair cap tops out 1.2 ry
# above the face centre, the mouth sits 0.55 ry below it, the chin 1.0 ry below it).
TOP_TO_MOUTH = 1.75  # ry from the top of the head to the mouth
MOUTH_TO_CHIN = 0.45
# The mouth box: the widest mouth SynthTalk draws (mouth_scale 2; a closed-mouth reference
# cannot tell the scale) opens 0.43-0.52 ry either way, its corners 0.38 rx <= 0.38 ry out.
# The box stops at the chin (+ a pixel of blur) all the same: below it are the neck and
# the top of the torso, which do not follow the head, so a tracked box reaching them reads
# sway as mouth; the widest mouths lose a sliver, the signal stays monotonic.
_BOX_HALF_H, _BOX_HALF_W = MOUTH_TO_CHIN, 0.42
_DIP_WINDOW = 0.5  # x (row - top): how far above and below a row its surroundings are looked for
_BACKGROUND = 20.0  # 8-bit RGB distance from the background colour that starts the head
_SAME_SKIN = 40.0  # 8-bit RGB: colours this close to the background are not told from it
_MIN_CONTRAST = 0.01  # luma units: a weaker dip is no mouth (a flat image, no face)
_LUMA = np.array([0.299, 0.587, 0.114]) / 255.0  # BT.601, as sync.luma


@dataclasses.dataclass(frozen=True)
class Face:
    """Where the face is in one image (pixels, continuous coordinates)."""

    axis: float  # x of the head's vertical mirror axis
    top: float  # y of the top of the head (hair; the forehead where hair looks like background)
    mouth: float  # y of the mouth's centre line
    ry: float  # the face's half-height: (mouth - top) / TOP_TO_MOUTH

    @property
    def centre(self) -> float:
        """y of the face (skin ellipse) centre."""
        return self.mouth - (TOP_TO_MOUTH - 1.2) * self.ry


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


def _mirror_axis(img: np.ndarray, rows: tuple[int, int], half: float, lo: float, hi: float) -> float:
    """The x in [lo, hi] (half-pixel grid) about which `img[rows]` within +-half px best
    matches its own mirror image (mean absolute difference; ties go to the middle)."""
    W = img.shape[1]
    region = img[max(0, rows[0]):max(rows[0] + 1, rows[1])]
    best, best_axis, mid = np.inf, 0.5 * (lo + hi), 0.5 * (lo + hi)
    for twice in range(int(np.floor(2 * lo)), int(np.ceil(2 * hi)) + 1):
        axis = twice / 2  # pixel j mirrors to j' = 2 axis - 1 - j (centres at j + 0.5)
        j = np.arange(int(np.floor(axis - half)), int(np.ceil(axis + half)))
        jm = twice - 1 - j
        ok = (j >= 0) & (j < W) & (jm >= 0) & (jm < W)
        if ok.sum() < max(2.0, half):
            continue
        err = np.abs(region[:, j[ok]] - region[:, jm[ok]]).mean() + 1e-6 * abs(axis - mid)
        if err < best:
            best, best_axis = err, axis
    return float(best_axis)


def face_axis(image: np.ndarray) -> float:
    """Image `(H, W, 3)` -> x of the head's vertical mirror axis (pixels, continuous): a
    first estimate, before the face's size is known.

    The axis (on a half-pixel grid within W/2 +- 0.1 H) where rows 0.1-0.45 H within
    +-0.15 H of it best match their own mirror image. The head is in those rows in every
    SynthTalk framing (all of it in the full shot, its upper part in the close-up), and a
    head's part is as symmetric as the whole; `face_geometry` then refines the axis on the
    face it found. The mouth sits on the axis; the look-alikes of a blurred closed mouth
    (corners where hair, skin and background meet) come in mirrored pairs off it."""
    img = _check_image(image).astype(np.float64)
    H, W = img.shape[:2]
    return _mirror_axis(img, (int(0.1 * H), int(np.ceil(0.45 * H))), max(2, int(round(0.15 * H))),
                        W / 2 - 0.1 * H, W / 2 + 0.1 * H)


def _axis_colours(img: np.ndarray, axis: float) -> np.ndarray:
    """Mean RGB `(H, 3)` of the column the axis crosses (the two either side of a pixel
    edge): narrow, as the eyes are 0.27 rx off it, under 2 px in the full shot."""
    W = img.shape[1]
    c = int(np.floor(axis))
    cols = [c] if axis - c > 0.25 else [c - 1, c]
    cols = [min(max(0, j), W - 1) for j in cols]
    return img[:, cols].astype(np.float64).mean(axis=1)


def _background(img: np.ndarray) -> np.ndarray:
    """Median RGB `(3,)` of the frame's top corners: SynthTalk draws nothing there in any
    framing (the head is narrower than the frame and starts below its top edge)."""
    H, W = img.shape[:2]
    h, w = max(1, int(0.1 * H)), max(1, int(0.1 * W))
    return np.median(np.concatenate([img[:h, :w].reshape(-1, 3), img[:h, W - w:].reshape(-1, 3)]), axis=0)


def _head_top(col: np.ndarray, bg: np.ndarray) -> tuple[int, float] | None:
    """Axis colours `(H, 3)` -> (first row unlike the background, sub-pixel y of the head's
    top edge) or None. The edge is where the distance from the background first reaches
    half its value just inside the head (rows top..top+2), between row centres: under
    blur the first unlike row is a pixel early, and the face would read that larger."""
    d = np.linalg.norm(col - bg, axis=1)
    far = np.flatnonzero(d > _BACKGROUND)
    if not far.size:
        return None
    top = int(far[0])
    half = 0.5 * d[top:top + 3].max()
    r = top + int(np.argmax(d[top:] >= half))
    edge = 0.0 if r == 0 else r - 0.5 + float(np.clip((half - d[r - 1]) / max(d[r] - d[r - 1], 1e-9), 0, 1))
    return top, edge


def _window(r: int, top: int, H: int) -> tuple[int, int]:
    """Rows [a0, b1) row r is compared with: half its distance from the top either way
    (0.875 ry at the mouth: past the widest mouth, short of the hair and the shirt)."""
    k = max(2, int(round(_DIP_WINDOW * (r - top))))
    return max(top, r - k), min(H, r + k + 1)


def _surround(col: np.ndarray, y: np.ndarray, y_row: float) -> np.ndarray:
    """Colour `(3,)` of one side of a row: the median of that side's rows `col (n, 3)` whose
    luma `y (n,)` is within a quarter of the way from its lightest to the row's own. That
    leaves out the dark mouth itself (an open mouth fills much of the window) and its soft
    edges, and, by the median, a row or two of a lighter neighbour (shirt under the neck)."""
    return np.median(col[y >= y.max() - 0.25 * (y.max() - y_row)], axis=0)


def _dips(col: np.ndarray, top: int, bg: np.ndarray) -> np.ndarray:
    """Mouth evidence `(H,)` of the axis colours `(H, 3)` below row `top`, background colour
    `bg (3,)` (see mouth_profile)."""
    H = col.shape[0]
    y = col @ _LUMA
    out = np.zeros(H)
    for r in range(top + 1, H - 1):
        a0, b1 = _window(r, top, H)
        dip = min(y[a0:r].max(), y[r + 1:b1].max()) - y[r]
        if dip > 0:
            above = _surround(col[a0:r], y[a0:r], y[r])
            below = _surround(col[r + 1:b1], y[r + 1:b1], y[r])
            # the hair cap's above is (blended) background: nearer it than to the skin below
            apart = np.linalg.norm(above - below) / max(np.linalg.norm(above - bg), _SAME_SKIN)
            out[r] = dip * max(0.0, 1.0 - apart)
    return out


def mouth_profile(image: np.ndarray, axis: float) -> np.ndarray:
    """-> `(H,)` mouth evidence down the face axis (luma units, >= 0).

    How much darker each row (of the column(s) the axis runs through) is than the lightest
    row above it and the lightest row below it, the darker of the two, down-weighted as
    the colours above and below differ: a mouth (closed or open) has the same skin above
    and below it, a one-sided edge (hairline, chin, neck to shirt) is no dip, and the hair
    cap has the background above it. Rows are looked at below the top of the head only,
    each against the rows within half its distance from the top, so the same test holds
    for a head of any size."""
    img = _check_image(image)
    col, bg = _axis_colours(img, axis), _background(img)
    head = _head_top(col, bg)
    return np.zeros(img.shape[0]) if head is None else _dips(col, head[0], bg)


def _find_mouth(img: np.ndarray, axis: float) -> tuple[float | None, float, float]:
    """-> (top edge y or None, mouth centre y (continuous), its evidence).

    The dip profile says which dip is the mouth; its centre is then taken from the luma:
    the darkness-weighted centre of the rows at least half as dark as the darkest (a
    blurred closed mouth is a symmetric bump, an open one a dark plateau)."""
    col, bg = _axis_colours(img, axis), _background(img)
    head = _head_top(col, bg)
    if head is None:
        return None, float("nan"), 0.0
    (top, edge), H = head, col.shape[0]
    prof = _dips(col, top, bg)
    r = int(np.argmax(prof))
    y = col @ _LUMA
    while 0 < r < H - 1 and min(y[r - 1], y[r + 1]) < y[r]:  # down to the darkest row
        r = r - 1 if y[r - 1] < y[r + 1] else r + 1
    a0, b1 = _window(r, top, H)
    ref = min(y[a0:r].max(), y[r + 1:b1].max()) if a0 < r < b1 - 1 else y[r]
    dark = np.clip(ref - y, 0.0, None)
    lo, hi = r, r
    while lo - 1 > top and dark[lo - 1] >= 0.5 * dark[r] > 0:
        lo -= 1
    while hi + 1 < H and dark[hi + 1] >= 0.5 * dark[r] > 0:
        hi += 1
    w = dark[lo:hi + 1]
    centre = (np.arange(lo, hi + 1) + 0.5) @ w / w.sum() if w.sum() > 0 else r + 0.5
    return edge, float(centre), float(prof.max())


def face_geometry(reference: np.ndarray) -> Face:
    """Reference image `(H, W, 3)` uint8 -> its `Face`: mirror axis, top of the head, mouth,
    size. Raises ValueError when no mouth stands out (no face, a flat image).

    The axis is found twice: roughly (`face_axis`), then on the face itself (top of the
    head to the chin, +-1.3 ry: hair and long hair are symmetric too), and the mouth is
    looked for again on the refined axis."""
    img = _check_image(reference)
    H, W = img.shape[:2]
    if H < 16 or W < 16:
        raise ValueError(f"reference: expected frames of at least 16x16 px to find a mouth, got {H}x{W}")
    axis = face_axis(img)
    f = img.astype(np.float64)
    for refine in (True, False):
        top, mouth, evidence = _find_mouth(img, axis)
        if top is None or evidence < _MIN_CONTRAST:
            raise ValueError(
                f"reference: no mouth found (expected a head unlike the background and, below its "
                f"top on the face axis, a dark horizontal mouth at least {_MIN_CONTRAST} luma darker "
                f"than the skin above and below it; the best dip was {evidence:.3f} at x={axis:.1f})")
        ry = max(1.0, (mouth - top) / TOP_TO_MOUTH)
        if refine:
            rows = (int(top), int(np.ceil(mouth + MOUTH_TO_CHIN * ry)))
            axis = _mirror_axis(f, rows, 1.3 * ry, axis - max(1.0, 0.15 * ry), axis + max(1.0, 0.15 * ry))
    return Face(axis=axis, top=top, mouth=mouth, ry=ry)


def _box_of(face: Face, H: int, W: int) -> tuple[int, int, int, int]:
    """The mouth box of a face: the pixels within 0.45 ry + 0.5 px of the mouth line (to
    the chin, + half a pixel of blur) and 0.42 ry + 0.5 px of the axis. At 32 px in the
    full shot the torso starts a pixel below the chin: a whole pixel more reads sway."""
    hh, hw = _BOX_HALF_H * face.ry + 0.5, _BOX_HALF_W * face.ry + 0.5
    y0, y1 = int(round(face.mouth - hh)), int(round(face.mouth + hh))
    x0, x1 = int(round(face.axis - hw)), int(round(face.axis + hw))
    return (max(0, y0), min(H, max(y0 + 1, y1)), max(0, x0), min(W, max(x0 + 1, x1)))


def mouth_box(reference: np.ndarray) -> tuple[int, int, int, int]:
    """Reference image `(H, W, 3)` uint8 -> mouth box `(y0, y1, x0, x1)` (half-open pixels).

    Centred on the mouth `face_geometry` finds and sized for the widest-open SynthTalk
    mouth (mouth_scale 2) plus a blur margin, but no lower than the chin: half-height
    0.45 ry + 0.5 px, half-width 0.42 ry + 0.5 px. Raises ValueError when no mouth
    stands out (no face, a flat image)."""
    img = _check_image(reference)
    return _box_of(face_geometry(img), *img.shape[:2])


def _face_region(face: Face, H: int, W: int) -> tuple[int, int, int, int]:
    """The head: from above the hair (a little background, for its edge) to the chin (the
    neck below does not follow the head), long hair to long hair (1.25 rx <= 1.25 ry)."""
    return (max(0, int(np.floor(face.top - 0.1 * face.ry))),
            min(H, int(np.ceil(face.mouth + (MOUTH_TO_CHIN + 0.05) * face.ry))),
            max(0, int(np.floor(face.axis - 1.2 * face.ry))), min(W, int(np.ceil(face.axis + 1.2 * face.ry))))


def _subpixel(c_minus: np.ndarray, c0: np.ndarray, c_plus: np.ndarray) -> np.ndarray:
    """Vertex of the parabola through three samples, in [-0.5, 0.5] of the middle one."""
    curv = c_minus - 2 * c0 + c_plus
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(curv < -1e-12, 0.5 * (c_minus - c_plus) / curv, 0.0)
    return np.clip(d, -0.5, 0.5)


def head_shifts(frames: np.ndarray, reference: np.ndarray, box: tuple[int, int, int, int] | None = None,
                max_shift: int | None = None) -> np.ndarray:
    """Head translation of each frame vs the reference -> `(T, 2)` float (dy, dx) pixels.

    Normalised cross-correlation of the reference head (`face_geometry`, mouth box masked
    out so an opening mouth does not pull the match) at integer shifts in +-max_shift px
    (default 0.35 ry rounded up; SynthTalk sways +-0.14 ry), refined to sub-pixel by a
    parabola through the peak: at 32 px a whole pixel moves half the mouth out of its box."""
    frames = _check_frames(frames)
    ref = _check_image(reference)
    if frames.shape[1:] != ref.shape:
        raise ValueError(f"frames {frames.shape[1:]} and reference {ref.shape} must have the same size")
    face = face_geometry(ref)
    return _head_shifts(frames, ref, face, _box_of(face, *ref.shape[:2]) if box is None else box, max_shift)


def _head_shifts(frames: np.ndarray, ref: np.ndarray, face: Face, box: tuple[int, int, int, int],
                 max_shift: int | None) -> np.ndarray:
    H, W = ref.shape[:2]
    s = int(np.ceil(0.35 * face.ry)) if max_shift is None else int(max_shift)
    fy0, fy1, fx0, fx1 = _face_region(face, H, W)
    y0, y1, x0, x1 = box
    mask = np.ones((fy1 - fy0, fx1 - fx0), bool)
    mask[max(0, y0 - fy0):max(0, y1 - fy0), max(0, x0 - fx0):max(0, x1 - fx0)] = False
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
    if frames.shape[1:] != ref.shape:
        raise ValueError(f"frames {frames.shape[1:]} and reference {ref.shape} must have the same size")
    face = face_geometry(ref)
    box = _box_of(face, *ref.shape[:2])
    shifts = _head_shifts(frames, ref, face, box, None) if track else np.zeros((frames.shape[0], 2))
    lum = luma(frames).astype(np.float64)
    out = np.zeros(frames.shape[0], np.float32)
    for t, (dy, dx) in enumerate(shifts):
        out[t] = 1.0 - _sample(lum[t], box, dy, dx).mean()
    return out


def lag_correlations(env: np.ndarray, signal: np.ndarray, max_lag: int) -> np.ndarray:
    """corr(env[t], signal[t + lag]) for lag = -max_lag..max_lag -> `(2 max_lag + 1,)`.

    Frames where either is NaN (e.g. no face found by a landmarker) are left out of each
    correlation; a constant signal (still mouth, silence) or an overlap under 3 frames
    correlates 0."""
    a = np.asarray(env, np.float64)
    b = np.asarray(signal, np.float64)
    n = min(a.size, b.size)
    out = np.zeros(2 * max_lag + 1)
    for i, lag in enumerate(range(-max_lag, max_lag + 1)):
        x = a[max(0, -lag): n - max(0, lag)]
        y = b[max(0, lag): n - max(0, -lag)]
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
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
