"""SynthTalk's body and camera: per-frame geometry (head, mouth, arms -> keypoints) and the
soft-edged rasteriser that draws it. `omnijax.data.synthetic` drives it clip by clip.

Geometry is laid out in the *full shot* (the whole person, frame height H) and then seen
through a camera, `pixel = scale * full-shot pixel + offset`, so the keypoints written to
disk are the exact pixel positions of what is drawn in every framing:

    full  scale 1    the whole person, arms gesturing out to the sides (the original shot)
    half  scale 1.5  medium shot: head and torso; the hands gesture in front of the body
    head  scale 2    close-up of head and shoulders; the hands come and go at the bottom

At scale 1.5 or 2 a square frame is narrower than the full shot's outstretched arms, so
the closer framings also move the arms' *rest pose* (elbows low, forearms raised) while
keeping the same random gesture motion around it: the wrists stay in a medium shot.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from omnijax.data import keypoints as kpt

HAND_COLOR = (30, 230, 60)  # gloves: G/R and G/B > 3, never reached by bg/shirt (saturation <= 0.35)
MOUTH_COLOR = (70, 15, 25)  # the only colour darker than luma 0.2 in a SynthTalk frame
EYE_COLOR = (70, 60, 90)
MAX_MOUTH_SCALE = 2.0  # beyond it a wide-open mouth reaches past the chin of a small face


@dataclasses.dataclass(frozen=True)
class Framing:
    scale: float  # zoom relative to the full shot
    top: float  # full-shot y (fraction of H) at the frame's top edge
    # arm angles, radians: shoulder a1 = arm[0] + arm[1] * energy (outward from straight
    # down), elbow a2 = arm[2] + arm[3] * energy (forearm flex), plus the random gestures
    arm: tuple[float, float, float, float]


FRAMINGS = {
    "full": Framing(1.0, 0.0, (0.35, 0.3, 0.6, 0.6)),
    # forearms near vertical: the hands gesture beside the chest, below the chin (so they
    # never hide the mouth from the sync filter) and inside a square medium shot
    "half": Framing(1.5, 0.07, (0.2, 0.2, 2.4, 0.4)),
    "head": Framing(2.0, 0.07, (0.2, 0.2, 2.4, 0.4)),
}


@dataclasses.dataclass(frozen=True)
class Camera:
    """pixel = scale * full-shot pixel + offset (zoom about the frame's vertical midline).

    The full shot is the identity exactly (x * 1.0 + 0.0 == x in floating point), which is
    what keeps `framing="full"` bit-identical to clips rendered before framings existed."""

    scale: float = 1.0
    ox: float = 0.0
    oy: float = 0.0

    @classmethod
    def for_shot(cls, framing: str, height: int, width: int) -> "Camera":
        f = FRAMINGS[framing]
        return cls(f.scale, (1.0 - f.scale) * width / 2, -f.scale * f.top * height)

    def x(self, x):
        return self.scale * x + self.ox

    def y(self, y):
        return self.scale * y + self.oy

    def box(self, x0, y0, x1, y1) -> tuple[float, float, float, float]:
        return (float(self.x(x0)), float(self.y(y0)), float(self.x(x1)), float(self.y(y1)))


# ----------------------------------------------------------------------------- motion

def _smooth_wave(rng, t: np.ndarray, amp: float, n: int = 3, fmax: float = 0.8) -> np.ndarray:
    out = np.zeros_like(t)
    for _ in range(n):
        out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(0.1, fmax) * t + rng.uniform(0, 2 * np.pi))
    return amp * out / n


def body_motion(rng: np.random.Generator, num_frames: int, fps: float, height: int, width: int,
                ident: dict, opening: np.ndarray, *, framing: str = "full", mouth_scale: float = 1.0
                ) -> dict:
    """Per-frame geometry (pixels of this framing): head centre, keypoints `(T, 13, 3)`.

    Visibility is 1 except for points outside the frame. `mouth_scale` multiplies how far
    the mouth opens (1 = the original range; closed it is the same thin line)."""
    H, W = float(height), float(width)
    fr = FRAMINGS[framing]
    cam = Camera.for_shot(framing, height, width)
    t = np.arange(num_frames) / fps
    energy = float(rng.uniform(0.5, 1.0))
    cx = W / 2
    hx = cx + _smooth_wave(rng, t, 0.02 * H)
    hy = 0.30 * H + _smooth_wave(rng, t, 0.012 * H)
    kp = np.zeros((num_frames, kpt.NUM_KEYPOINTS, 3), np.float32)
    kp[..., 2] = 1.0
    ry = ident["face_ry"] * H

    def put(name, x, y):
        kp[:, kpt.INDEX[name], 0] = cam.x(x)
        kp[:, kpt.INDEX[name], 1] = cam.y(y)

    put("nose", hx, hy + 0.15 * ry)
    put("neck", np.full_like(t, cx), np.full_like(t, 0.49 * H))
    mouth_y = hy + 0.55 * ry
    half_h = (0.008 + 0.03 * mouth_scale * opening) * H
    put("mouth_top", hx, mouth_y - half_h)
    put("mouth_bottom", hx, mouth_y + half_h)
    put("chin", hx, hy + ry + 0.5 * half_h)
    upper, fore = 0.17 * H, 0.15 * H
    for side, sign in (("r", -1.0), ("l", 1.0)):  # the person's right arm is on image left
        sx, sy = cx + sign * 0.17 * H, 0.53 * H
        a1 = fr.arm[0] + _smooth_wave(rng, t, 0.6 * energy) + fr.arm[1] * energy
        a2 = fr.arm[2] + _smooth_wave(rng, t, 1.0 * energy) + fr.arm[3] * energy
        ex = sx + sign * upper * np.sin(a1)
        ey = sy + upper * np.cos(a1)
        wx = ex + sign * fore * np.sin(a1 + a2)
        wy = ey + fore * np.cos(a1 + a2)
        put(f"{side}_shoulder", np.full_like(t, sx), np.full_like(t, sy))
        put(f"{side}_elbow", ex, ey)
        put(f"{side}_wrist", wx, wy)
        put(f"{side}_hip", np.full_like(t, cx + sign * 0.12 * H), np.full_like(t, 0.97 * H))
    # anything outside the frame is not visible
    outside = (kp[..., 0] < 0) | (kp[..., 0] >= W) | (kp[..., 1] < 0) | (kp[..., 1] >= H)
    kp[..., 2] = np.where(outside, 0.0, kp[..., 2])
    return {"kp": kp, "hx": cam.x(hx), "hy": cam.y(hy), "mouth_half_h": cam.scale * half_h,
            "energy": energy, "camera": cam}


# ----------------------------------------------------------------------------- raster

class Canvas:
    """Soft-edged shapes composited over one frame (coverage = 0.5 - signed distance, in px)."""

    def __init__(self, height: int, width: int, colour):
        self.img = np.empty((height, width, 3), np.float32)
        self.img[:] = colour
        self.ys = np.arange(height, dtype=np.float32)[:, None] + 0.5
        self.xs = np.arange(width, dtype=np.float32)[None, :] + 0.5

    def _paint(self, dist: np.ndarray, colour) -> None:
        a = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
        self.img += a * (np.asarray(colour, np.float32) - self.img)

    def ellipse(self, x, y, rx, ry, colour) -> None:
        r = np.sqrt(((self.xs - x) / rx) ** 2 + ((self.ys - y) / ry) ** 2)
        self._paint((r - 1.0) * min(rx, ry), colour)

    def capsule(self, x0, y0, x1, y1, radius, colour) -> None:
        dx, dy = x1 - x0, y1 - y0
        L2 = max(dx * dx + dy * dy, 1e-6)
        u = np.clip(((self.xs - x0) * dx + (self.ys - y0) * dy) / L2, 0.0, 1.0)
        d = np.sqrt((self.xs - x0 - u * dx) ** 2 + (self.ys - y0 - u * dy) ** 2)
        self._paint(d - radius, colour)

    def rect(self, x0, y0, x1, y1, colour) -> None:
        d = np.maximum(np.maximum(x0 - self.xs, self.xs - x1), np.maximum(y0 - self.ys, self.ys - y1))
        self._paint(d, colour)

    def uint8(self) -> np.ndarray:
        return np.clip(np.round(self.img), 0, 255).astype(np.uint8)


def render_frame(i: int, height: int, width: int, ident: dict, motion: dict,
                 occluder: tuple[float, float, float, float] | None) -> np.ndarray:
    """Frame i of `motion` (from body_motion) as uint8 `(height, width, 3)`; `occluder` is a
    box in this framing's pixels."""
    cam = motion.get("camera", Camera())
    S = cam.scale * float(height)  # the full shot's height in this shot's pixels: sizes scale with it
    kp = motion["kp"][i]
    P = {n: kp[kpt.INDEX[n], :2] for n in kpt.NAMES}
    c = Canvas(height, width, ident["bg_rgb"])
    skin, shirt, hair = ident["skin_rgb"], ident["shirt_rgb"], ident["hair_rgb"]
    hx, hy = motion["hx"][i], motion["hy"][i]
    rx, ry = ident["face_rx"] * S, ident["face_ry"] * S
    if ident["long_hair"]:
        c.rect(hx - 1.25 * rx, hy - 0.2 * ry, hx + 1.25 * rx, hy + 1.2 * ry, hair)
    # torso, then neck, then head
    c.ellipse(cam.x(width / 2), cam.y(0.83 * float(height)), 0.21 * S, 0.34 * S, shirt)
    c.capsule(hx, hy + 0.8 * ry, P["neck"][0], P["neck"][1], 0.045 * S, skin)
    c.ellipse(hx, hy - 0.25 * ry, 1.12 * rx, 0.95 * ry, hair)
    c.ellipse(hx, hy, rx, ry, skin)
    for s in (-1, 1):
        c.ellipse(hx + s * 0.4 * rx, hy - 0.15 * ry, 0.13 * rx, 0.1 * ry, EYE_COLOR)
    c.ellipse(hx, P["nose"][1], 0.1 * rx, 0.12 * ry, tuple(0.85 * np.asarray(skin)))
    my = 0.5 * (P["mouth_top"][1] + P["mouth_bottom"][1])
    c.ellipse(hx, my, 0.38 * rx, motion["mouth_half_h"][i], MOUTH_COLOR)
    # arms: sleeve, forearm, glove
    for side in ("r", "l"):
        sh, el, wr = P[f"{side}_shoulder"], P[f"{side}_elbow"], P[f"{side}_wrist"]
        c.capsule(*sh, *el, 0.04 * S, shirt)
        c.capsule(*el, *wr, 0.03 * S, skin)
        c.ellipse(*wr, 0.045 * S, 0.045 * S, HAND_COLOR)
    if occluder is not None:
        c.rect(*occluder, (128, 128, 128))
    return c.uint8()
