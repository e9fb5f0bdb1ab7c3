"""Constructed SynthTalk inputs with known answers, for checking the metrics.

A metric is trusted only after a test shows it moves the right way on constructed input
(README "Evaluation"). These helpers render SynthTalk frames in memory with the renderer's
own functions (no mp4, no codec), with one factor changed at a time: the mouth delayed,
the head swaying more, the wrists moved, a colour drifting per segment. Every clip can be
seen through any SynthTalk camera (`framing`) with any mouth range (`mouth_scale`), so
each metric is checked on the shots the data set renders, not only the full shot.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from scipy import ndimage

from omnijax.data import keypoints as kpt
from omnijax.data import synthetic as st

HEAD_POINTS = ("nose", "mouth_top", "mouth_bottom", "chin")


def render(seed: int, size: int = 64, seconds: float = 4.0, fps: float = 25.0, *, delay: int = 0,
           driver_seed: int | None = None, motion_seed: int | None = None,
           edit: Callable[[dict], None] | None = None,
           colours: Callable[[int], dict] | None = None, framing: str = "full",
           mouth_scale: float = 1.0) -> dict:
    """One SynthTalk clip -> {"frames": (T, size, size, 3) uint8, "wave": (N,) float32 at
    16 kHz, "identity": dict, "motion": dict (keypoints "kp" (T, 13, 3), ...), "fps"}.

    seed: identity and speech (syllable engine: deterministic, no espeak needed);
    delay: the mouth follows the audio `delay` frames late (< 0: early);
    driver_seed: the mouth follows another utterance (out of sync);
    motion_seed: other gestures and sway for the same identity and speech;
    edit(motion): change the geometry in place before drawing (sway, moved wrists);
    colours(i): identity overrides for frame i (a drifting shirt, a jump at a seam);
    framing, mouth_scale: the camera and mouth range of `SynthConfig` (the defaults give
    the clips rendered before framings existed, bit for bit).

    The random draws do not depend on framing or mouth_scale: the same seed is the same
    person saying the same thing with the same gestures in every shot."""
    rng = np.random.default_rng(seed)
    ident = st.sample_identity(rng)
    wave, _, _ = st.speech(rng, seconds, "syllable", ident["pitch"], ident["speed"])
    T = int(round(seconds * fps))
    driver = wave
    if driver_seed is not None:
        driver, _, _ = st.speech(np.random.default_rng(driver_seed), seconds, "syllable",
                                 ident["pitch"], ident["speed"])
    opening = st.mouth_opening(driver, fps, T)
    if delay:
        # opening[t] = original[t - delay], holding the end value where there is none
        idx = np.clip(np.arange(T) - delay, 0, T - 1)
        opening = opening[idx]
    motion_rng = rng if motion_seed is None else np.random.default_rng([seed, motion_seed])
    motion = st.body_motion(motion_rng, T, fps, size, size, ident, opening, framing=framing,
                            mouth_scale=mouth_scale)
    if edit is not None:
        edit(motion)
    frames = np.stack([st.render_frame(i, size, size, ident | (colours(i) if colours else {}), motion, None)
                       for i in range(T)])
    return {"frames": frames, "wave": wave, "identity": ident, "motion": motion, "fps": fps}


def face_truth(clip: dict, i: int = 0) -> dict:
    """What the renderer drew in frame i of a `render` clip, in its pixels: {"axis": x of
    the face's mirror axis, "centre": y of the face centre, "mouth": y of the mouth line,
    "rx", "ry": the face's radii, "mouth_half_h": how far the mouth is open either way,
    "widest": the widest it opens in the clip}."""
    m, ident = clip["motion"], clip["identity"]
    S = m["camera"].scale * clip["frames"].shape[1]  # the full shot's height in these pixels
    kp = m["kp"][i]
    return {"axis": float(m["hx"][i]), "centre": float(m["hy"][i]),
            "mouth": float(0.5 * (kp[kpt.INDEX["mouth_top"], 1] + kp[kpt.INDEX["mouth_bottom"], 1])),
            "rx": ident["face_rx"] * S, "ry": ident["face_ry"] * S,
            "mouth_half_h": float(m["mouth_half_h"][i]), "widest": float(m["mouth_half_h"].max())}


def sway(amplitude: float, fps: float = 25.0) -> Callable[[dict], None]:
    """An `edit` adding head sway of `amplitude` px (x at 0.7 Hz, y at 0.45 Hz)."""
    def edit(motion: dict) -> None:
        t = np.arange(motion["hx"].size) / fps
        dx = amplitude * np.sin(2 * np.pi * 0.7 * t)
        dy = amplitude * np.sin(2 * np.pi * 0.45 * t + 1.0)
        motion["hx"] = motion["hx"] + dx
        motion["hy"] = motion["hy"] + dy
        for name in HEAD_POINTS:  # the renderer draws mouth and nose from these
            motion["kp"][:, kpt.INDEX[name], 0] += dx
            motion["kp"][:, kpt.INDEX[name], 1] += dy
    return edit


def move_wrists(dx: float, dy: float) -> Callable[[dict], None]:
    """An `edit` moving both wrists (so the gloves) by (dx, dy) px."""
    def edit(motion: dict) -> None:
        for name in ("r_wrist", "l_wrist"):
            motion["kp"][:, kpt.INDEX[name], 0] += dx
            motion["kp"][:, kpt.INDEX[name], 1] += dy
    return edit


def blur(frames: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of uint8 `(T, H, W, 3)` frames in space (what a VAE decoder does)."""
    f = ndimage.gaussian_filter(np.asarray(frames, np.float32), (0, sigma, sigma, 0))
    return np.clip(np.round(f), 0, 255).astype(np.uint8)
