"""Identity drift and seams from pixels: does a long chained video stay the same person?

Appearance is four colour statistics, each one region's colour (a median over its pixels,
averaged over frames) in CIELAB, so a distance is a colour difference in Delta E (CIE76)
units (~2.3 is just noticeable; two SynthTalk identities are ~20-35 apart, median):

- background: the top corners of the frame (SynthTalk never draws anything there, in any
  framing: the head starts below the top edge and is narrower than the frame);
- shirt: beside the neck and below it, where the torso is in every framing (in the
  close-up only a strip at the bottom edge is left of it);
- skin: the forehead and both cheeks;
- hair: the cap on top of the head, unmixed from a window down the face axis that spans
  background, hair and forehead (see `Layout`: the cap is only 1-2 px thick at 32-64 px
  in the full shot).

Every region is placed from the face found in the reference image (`lipsync.face_geometry`:
its axis, mouth and half-height ry), in multiples of ry, so the layout follows the person
in the full, half and head framings alike. The head regions follow the head in every
frame (`lipsync.head_shifts`), so sway and a slightly displaced generated head do not read
as drift; the shirt and background stay put, as the torso does. Medians make each region
robust to what may cross it (a hand over the shirt, blur from a neighbour), and pixels of
glove green are left out of them.

Boxes are `(y0, y1, x0, x1)` pixels.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import optimize

from omnijax.eval.lipsync import Face, _check_frames, _check_image, _sample, face_geometry, head_shifts
from omnijax.eval.pose import green_dominance

REGIONS = ("hair", "skin", "shirt", "background")
_GLOVE = 0.2  # green dominance above which a pixel is taken for a glove (pose: hands are > 0.4)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 255] `(..., 3)` -> CIELAB (D65) `(..., 3)` float64."""
    c = np.asarray(rgb, np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def _box(cy: float, cx: float, hh: float, hw: float, H: int, W: int) -> tuple[int, int, int, int]:
    """A box of half-size (hh, hw) pixels (at least one pixel) around (cy, cx), in the frame."""
    y0, y1 = int(np.floor(cy - hh)), int(np.ceil(cy + hh))
    x0, x1 = int(np.floor(cx - hw)), int(np.ceil(cx + hw))
    y0, x0 = min(max(0, y0), H - 1), min(max(0, x0), W - 1)
    return (y0, max(y0 + 1, min(H, y1)), x0, max(x0 + 1, min(W, x1)))


def _pixels(frame: np.ndarray, boxes, dy: float = 0.0, dx: float = 0.0) -> np.ndarray:
    """RGB float samples `(N, 3)` of the boxes, moved by (dy, dx) (bilinear)."""
    f = frame.astype(np.float64)
    return np.concatenate([np.stack([_sample(f[..., c], b, dy, dx).ravel() for c in range(3)], -1)
                           for b in boxes])


def _median(px: np.ndarray) -> np.ndarray:
    """Median colour `(3,)` of samples `(N, 3)` that are not glove green (a hand crossing
    a region is not the region; if it covers all of it, all samples count)."""
    keep = green_dominance(np.clip(px, 0, 255).astype(np.uint8)) <= _GLOVE
    return np.median(px[keep] if keep.any() else px, axis=0)


def _span(face: Face, rows: tuple[float, float], cols: tuple[float, float], H: int, W: int
          ) -> tuple[int, int, int, int]:
    """A box from offsets in ry: rows below the face centre, columns right of the axis."""
    (r0, r1), (c0, c1) = rows, cols
    cy, cx = face.centre + 0.5 * (r0 + r1) * face.ry, face.axis + 0.5 * (c0 + c1) * face.ry
    return _box(cy, cx, 0.5 * (r1 - r0) * face.ry, 0.5 * (c1 - c0) * face.ry, H, W)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where the regions of one reference image are (boxes in reference pixels).

    The hair cap is a 1-2 px band at 32-64 px, so any single row of it mixes with the
    background above and the forehead below by an amount that changes with sub-pixel sway.
    Hair is instead read from the mean colour of a tall window down the face axis (bg,
    hair, forehead), which sway and blur leave unchanged, unmixed with the weights the
    reference gives: hair = (window - w_bg * background - w_skin * skin) / w_hair."""

    boxes: dict[str, list[tuple[int, int, int, int]]]
    hair_window: tuple[int, int, int, int]
    weights: tuple[float, float, float]  # (w_bg, w_hair, w_skin) of the window mean, sum 1


def layout(reference: np.ndarray) -> Layout:
    """Reference image `(H, W, 3)` -> its `Layout`. Raises ValueError if no mouth is found.

    Offsets in ry from the face centre (SynthTalk: the skin ellipse spans +-1 ry, the
    eyes sit 0.15 ry above the centre, the mouth 0.55 ry below, the hair cap from 1.0 to
    1.2 ry above; the neck is 0.28-0.35 ry wide either side and ends 1.5-1.8 ry below,
    where the torso widens into the shoulders)."""
    ref = _check_image(reference)
    H, W = ref.shape[:2]
    face = face_geometry(ref)
    p = max(0.5, 0.1 * face.ry)
    skin = [_span(face, (-0.73, -0.45), (-0.28, 0.28), H, W),  # forehead, between face top and eyes
            # cheeks: beside the nose, above the lip corners
            _box(face.mouth - 0.31 * face.ry, face.axis - 0.45 * face.ry, p, p, H, W),
            _box(face.mouth - 0.31 * face.ry, face.axis + 0.45 * face.ry, p, p, H, W)]
    bg = [(0, max(1, int(0.12 * H)), 0, max(1, int(0.12 * W))),
          (0, max(1, int(0.12 * H)), W - max(1, int(0.12 * W)), W)]
    # beside the neck from where it meets the torso, and under it; in the close-up only the
    # frame's bottom rows are left of these (`_box` keeps at least one row in the frame)
    shirt = [_span(face, (1.6, 2.6), (-0.75, -0.4), H, W), _span(face, (1.6, 2.6), (0.4, 0.75), H, W),
             _span(face, (1.85, 2.6), (-0.4, 0.4), H, W)]
    # the window covers background, hair cap and forehead for every face (the cap's top is
    # 1.2 ry above the centre, the measured ry is within ~12% of the true one); the purest
    # hair row is the one least explained as a mix of bg and skin (a row blending hair with
    # either is nearer that mix than pure hair is, even where hair is close to the skin)
    window = _span(face, (-1.52, -0.76), (-0.21, 0.21), H, W)
    skin_rgb = _median(_pixels(ref, skin))
    bg_rgb = np.median(_pixels(ref, bg), axis=0)
    wy0, wy1, wx0, wx1 = window
    col = ref[wy0:wy1, wx0:wx1].astype(np.float64).mean(axis=1)
    d = skin_rgb - bg_rgb
    u = np.clip((col - bg_rgb) @ d / max(d @ d, 1e-9), 0.0, 1.0)
    hair_rgb = col[int(np.argmax(np.linalg.norm(col - bg_rgb - u[:, None] * d, axis=1)))]
    # window mean = w_bg bg + w_hair hair + w_skin skin, w >= 0, sum 1 (heavy last row)
    A = np.vstack([np.stack([bg_rgb, hair_rgb, skin_rgb], 1), 1e3 * np.ones((1, 3))])
    w, _ = optimize.nnls(A, np.concatenate([col.mean(axis=0), [1e3]]))
    w = w / max(w.sum(), 1e-9)
    return Layout({"skin": skin, "shirt": shirt, "background": bg, "hair": [window]}, window,
                  (float(w[0]), float(w[1]), float(w[2])))


def appearance(frames: np.ndarray, ref: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Frames `(T, H, W, 3)` uint8 -> region name -> mean over frames of the region's
    colour, CIELAB `(3,)`. Regions are found in `ref` (default: the first frame); the head
    regions follow the head per frame."""
    frames = _check_frames(frames)
    ref = frames[0] if ref is None else _check_image(ref)
    lay = layout(ref)
    shifts = head_shifts(frames, ref)
    w_bg, w_hair, w_skin = lay.weights
    out: dict[str, list[np.ndarray]] = {k: [] for k in REGIONS}
    for t, (dy, dx) in enumerate(shifts):
        c = {"skin": _median(_pixels(frames[t], lay.boxes["skin"], dy, dx)),
             "shirt": _median(_pixels(frames[t], lay.boxes["shirt"])),  # the torso stays put
             "background": np.median(_pixels(frames[t], lay.boxes["background"]), axis=0)}
        window = _pixels(frames[t], [lay.hair_window], dy, dx).mean(axis=0)
        # a reference with (almost) no visible hair: do not divide the noise up by ~0
        c["hair"] = (window - w_bg * c["background"] - w_skin * c["skin"]) / max(w_hair, 0.2)
        for k in REGIONS:
            out[k].append(c[k])
    return {k: srgb_to_lab(np.clip(np.mean(v, axis=0), 0.0, 255.0)) for k, v in out.items()}


def appearance_distances(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Per-region colour difference (Delta E 76) between two `appearance` results."""
    common = [k for k in REGIONS if k in a and k in b]
    if not common:
        raise ValueError(f"appearances share no region: {sorted(a)} vs {sorted(b)} (expected {REGIONS})")
    return {k: float(np.linalg.norm(np.asarray(a[k]) - np.asarray(b[k]))) for k in common}


def appearance_distance(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    """Mean over regions of the colour difference (Delta E 76): 0 = same colours."""
    return float(np.mean(list(appearance_distances(a, b).values())))


def _segments(T: int, segment_starts) -> list[tuple[int, int]]:
    starts = [int(s) for s in segment_starts]
    if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])) or starts[-1] >= T:
        raise ValueError(f"segment_starts must start at 0 and increase strictly below T={T}, got {starts}")
    return list(zip(starts, starts[1:] + [T]))


def drift_curve(frames: np.ndarray, ref: np.ndarray, segment_starts) -> list[float]:
    """Chained video `(T, H, W, 3)` + reference image `(H, W, 3)` + the first frame of each
    segment (`[0, s1, s2, ...]`) -> appearance distance to the reference per segment.

    A stable identity gives a flat, low curve; drift shows as a rising one. Read it against
    `other_identity_distance`, the distance at which it would be someone else."""
    frames = _check_frames(frames)
    ref = _check_image(ref)
    segments = _segments(frames.shape[0], segment_starts)
    target = appearance(ref[None], ref)
    return [appearance_distance(appearance(frames[a:b], ref), target) for a, b in segments]


def other_identity_distance(ref: np.ndarray, other_refs) -> float:
    """Median appearance distance from `ref (H, W, 3)` to other clips' reference images
    (each `(H, W, 3)`, same size): the scale of a drift curve (drift this far = another person)."""
    ref = _check_image(ref)
    others = [_check_image(o, "other reference") for o in other_refs]
    if not others:
        raise ValueError("other_refs: expected at least one other clip's reference image")
    a = appearance(ref[None], ref)
    return float(np.median([appearance_distance(a, appearance(o[None], o)) for o in others]))


def frame_changes(frames: np.ndarray) -> np.ndarray:
    """`(T, H, W, 3)` -> mean absolute change from frame t-1 to t, `(T - 1,)` (entry t-1),
    in 8-bit levels."""
    f = _check_frames(frames).astype(np.float32)
    return np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))


def seam_stats(frames: np.ndarray, boundaries) -> dict:
    """Frames `(T, H, W, 3)` + segment boundaries (index of each segment's first frame, 0
    and T excluded) -> {"seam": mean change into a boundary frame, "inside": mean change
    between frames of one segment, "ratio": seam / inside}.

    ratio 1.0 = invisible seams; a frozen video with no jump reads 1.0, a jump in one: inf."""
    d = frame_changes(frames)
    T = d.size + 1
    b = sorted({int(x) for x in boundaries})
    if not b or b[0] <= 0 or b[-1] >= T:
        raise ValueError(f"boundaries must be frame indices in [1, T-1] = [1, {T - 1}], got {list(boundaries)}")
    at = np.zeros(d.size, bool)
    at[np.asarray(b) - 1] = True  # d[t-1] is the change from frame t-1 into frame t
    if at.all():
        raise ValueError("every frame is a boundary: no change inside a segment to compare with")
    seam, inside = float(d[at].mean()), float(d[~at].mean())
    if inside > 0:
        ratio = seam / inside
    else:
        ratio = 1.0 if seam == 0 else float("inf")
    return {"seam": seam, "inside": inside, "ratio": ratio}


def seam_ratio(frames: np.ndarray, boundaries) -> float:
    """Mean frame-to-frame change at segment boundaries over the mean change inside
    segments (1.0 = invisible seams); see `seam_stats`."""
    return seam_stats(frames, boundaries)["ratio"]
