"""SynthTalk: procedurally rendered talking, gesturing people with real speech.

Written in the on-disk layout of real data, so everything downstream runs for real:

    OUT/synth.json               generator settings (seed, size, fps, ...)
    OUT/truth.json               ground truth per clip (out of sync? keypoints occluded?)
                                 -- for evaluation only; preprocess never reads it
    OUT/clips/<id>.mp4           H.264 video + AAC speech
    OUT/clips/<id>.keypoints.json  13 body keypoints per frame (x, y, visibility), pixels
    OUT/clips/<id>.txt           caption (identity + action + what is said)
    OUT/clips/<id>.json          clip metadata (speech engine, sentence, identity)

Each person has a sampled identity (skin, hair, shirt, background colours, face shape), a
head that sways a little, a mouth whose opening follows the loudness envelope of the
clip's speech, and arms that follow smooth random gestures; the keypoints are the exact
joint positions the renderer drew. Hands are drawn in `HAND_COLOR` (a saturated green no
background or shirt can take), so evaluation can segment them from pixels.

Weak data on purpose: a fraction of clips have a mouth driven by *another* utterance's
envelope (out of sync), and fractions have an occluder over one arm (those keypoints are
marked invisible) or keypoints missing for most frames (a detector that lost the person).

`omnijax synth --out DIR --clips N --seed S --size 64 --fps 25 --seconds 4`
"""

from __future__ import annotations

import argparse
import colorsys
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import tempfile

import numpy as np
import soundfile as sf
from tqdm import tqdm

from omnijax.data import keypoints as kpt
from omnijax.data.media import VideoWriter
from omnijax.data.sync import loudness_envelope

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
HAND_COLOR = (30, 230, 60)  # gloves: G/R and G/B > 3, never reached by bg/shirt (saturation <= 0.35)
MOUTH_COLOR = (70, 15, 25)  # the only colour darker than luma 0.2 in a SynthTalk frame
EYE_COLOR = (70, 60, 90)

SKIN = {"light": (240, 205, 180), "fair": (225, 180, 150), "tan": (200, 150, 110),
        "brown": (160, 110, 75), "dark": (120, 80, 55)}
HAIR = {"grey": (150, 150, 150), "blond": (220, 190, 120), "brown": (120, 80, 50),
        "auburn": (150, 70, 40), "dark brown": (95, 70, 55)}
NAMED = {"white": (235, 235, 235), "grey": (140, 140, 140), "red": (190, 120, 120),
         "orange": (200, 160, 110), "yellow": (200, 200, 130), "green": (130, 180, 130),
         "teal": (120, 180, 180), "blue": (120, 140, 200), "purple": (170, 130, 190),
         "pink": (220, 160, 190), "beige": (215, 200, 170)}

WORDS = ("the quick brown fox jumps over a lazy dog while we talk about weather music "
         "travel coffee bright morning river mountain city garden friends people simple "
         "really quite never always maybe today tomorrow yesterday window paper water light "
         "little big happy open close listen speak think remember").split()


@dataclasses.dataclass
class SynthConfig:
    clips: int = 16
    seed: int = 0
    size: int = 64  # frame height (and width unless `width` is set), pixels
    width: int | None = None
    fps: float = 25.0
    seconds: float = 4.0
    out_of_sync: float = 0.2  # fraction of clips whose mouth follows another utterance
    occluded: float = 0.1  # fraction with an occluder over one arm
    missing: float = 0.05  # fraction with keypoints missing for most frames
    speech: str = "auto"  # auto | espeak | syllable
    crf: int = 18


# ----------------------------------------------------------------------------- speech

def espeak_available() -> bool:
    return shutil.which("espeak-ng") is not None


def _sentence(rng: np.random.Generator) -> str:
    n = int(rng.integers(4, 9))
    words = [WORDS[i] for i in rng.integers(0, len(WORDS), n)]
    return " ".join(words).capitalize() + "."


def _espeak(text: str, pitch: int, speed: int) -> np.ndarray:
    from scipy.signal import resample_poly  # 2 s import: only when speaking

    with tempfile.TemporaryDirectory() as tmp:
        wav = os.path.join(tmp, "s.wav")
        subprocess.run(["espeak-ng", "-v", "en", "-p", str(pitch), "-s", str(speed), "-w", wav, text],
                       check=True, capture_output=True)
        wave, sr = sf.read(wav, dtype="float32")
    if sr == 22050 and SAMPLE_RATE == 16000:
        return resample_poly(wave, 320, 441).astype(np.float32)
    g = np.gcd(int(sr), SAMPLE_RATE)
    return resample_poly(wave, SAMPLE_RATE // g, int(sr) // g).astype(np.float32)


def _syllables(rng: np.random.Generator, seconds: float, f0: float) -> np.ndarray:
    """Deterministic fallback speech: voiced syllables (harmonics shaped by vowel formants)
    grouped into words with pauses; loudness rises and falls like speech."""
    out = np.zeros(int(seconds * SAMPLE_RATE) + SAMPLE_RATE, np.float32)
    pos = 0
    vowels = [(730, 1090), (270, 2290), (300, 870), (530, 1840), (640, 1190)]
    while pos < out.size - SAMPLE_RATE // 2:
        for _ in range(int(rng.integers(1, 4))):
            dur = int(rng.uniform(0.12, 0.25) * SAMPLE_RATE)
            t = np.arange(dur) / SAMPLE_RATE
            f1, f2 = vowels[int(rng.integers(len(vowels)))]
            pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
            phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
            s = np.zeros(dur)
            for h in range(1, 30):
                fh = h * f0
                gain = np.exp(-((fh - f1) / 150) ** 2) + 0.6 * np.exp(-((fh - f2) / 200) ** 2) + 0.02
                s += gain * np.sin(h * phase)
            env = np.sin(np.pi * np.arange(dur) / dur) ** 0.7 * rng.uniform(0.5, 1.0)
            seg = (s * env / 6).astype(np.float32)
            end = min(pos + dur, out.size)
            out[pos:end] = seg[: end - pos]
            pos = end + int(rng.uniform(0.03, 0.08) * SAMPLE_RATE)
        pos += int(rng.uniform(0.1, 0.25) * SAMPLE_RATE)
    return out


def speech(rng: np.random.Generator, seconds: float, engine: str, pitch: int, speed: int
           ) -> tuple[np.ndarray, str, str]:
    """-> waveform `(seconds * 16000,)`, the text said, and the engine that said it.

    Leading silence of 0.1-0.5 s (random), sentences until the clip is full, then cut."""
    n = int(round(seconds * SAMPLE_RATE))
    lead = np.zeros(int(rng.uniform(0.1, 0.5) * SAMPLE_RATE), np.float32)
    if engine == "espeak":
        parts, text = [lead], []
        while sum(p.size for p in parts) < n:
            s = _sentence(rng)
            text.append(s)
            parts += [_espeak(s, pitch, speed), np.zeros(int(0.15 * SAMPLE_RATE), np.float32)]
        wave = np.concatenate(parts)
        said = " ".join(text)
    else:
        said = " ".join(_sentence(rng) for _ in range(2))  # what the syllables stand in for
        wave = np.concatenate([lead, _syllables(rng, seconds, 90.0 + pitch * 1.5)])
    wave = wave[:n]
    wave = np.pad(wave, (0, n - wave.size))
    peak = np.abs(wave).max()
    return (wave * (0.5 / peak) if peak > 0 else wave).astype(np.float32), said, engine


def mouth_opening(wave: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """Loudness envelope -> mouth opening in [0, 1] per frame (what the renderer draws)."""
    env = loudness_envelope(wave, SAMPLE_RATE, fps, num_frames)
    ref = max(float(np.quantile(env, 0.95)), 1e-6)
    return np.clip(env / ref, 0.0, 1.0) ** 0.7


# ----------------------------------------------------------------------------- identity

def _muted_colour(rng, lum_lo, lum_hi, max_sat=0.35) -> tuple[int, int, int]:
    while True:
        h, s, v = rng.uniform(), rng.uniform(0.05, max_sat), rng.uniform(0.45, 0.95)
        rgb = np.array(colorsys.hsv_to_rgb(h, s, v)) * 255
        lum = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255
        if lum_lo <= lum <= lum_hi:
            return tuple(int(c) for c in rgb)


def _name_of(rgb) -> str:
    return min(NAMED, key=lambda k: sum((a - b) ** 2 for a, b in zip(NAMED[k], rgb)))


def sample_identity(rng: np.random.Generator) -> dict:
    skin = list(SKIN)[int(rng.integers(len(SKIN)))]
    hair = list(HAIR)[int(rng.integers(len(HAIR)))]
    shirt = _muted_colour(rng, 0.35, 0.8)
    bg = _muted_colour(rng, 0.45, 0.9, max_sat=0.25)
    return {
        "skin": skin, "skin_rgb": SKIN[skin], "hair": hair, "hair_rgb": HAIR[hair],
        "shirt_rgb": shirt, "shirt": _name_of(shirt), "bg_rgb": bg, "background": _name_of(bg),
        "face_rx": float(rng.uniform(0.10, 0.13)), "face_ry": float(rng.uniform(0.13, 0.16)),
        "long_hair": bool(rng.random() < 0.5),
        "pitch": int(rng.integers(25, 75)), "speed": int(rng.integers(140, 185)),
    }


# ----------------------------------------------------------------------------- motion

def _smooth_wave(rng, t: np.ndarray, amp: float, n: int = 3, fmax: float = 0.8) -> np.ndarray:
    out = np.zeros_like(t)
    for _ in range(n):
        out += rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * rng.uniform(0.1, fmax) * t + rng.uniform(0, 2 * np.pi))
    return amp * out / n


def body_motion(rng: np.random.Generator, num_frames: int, fps: float, height: int, width: int,
                ident: dict, opening: np.ndarray) -> dict:
    """Per-frame geometry (pixels): head centre, keypoints `(T, 13, 3)` with visibility 1."""
    H, W = float(height), float(width)
    t = np.arange(num_frames) / fps
    energy = float(rng.uniform(0.5, 1.0))
    cx = W / 2
    hx = cx + _smooth_wave(rng, t, 0.02 * H)
    hy = 0.30 * H + _smooth_wave(rng, t, 0.012 * H)
    kp = np.zeros((num_frames, kpt.NUM_KEYPOINTS, 3), np.float32)
    kp[..., 2] = 1.0
    ry = ident["face_ry"] * H

    def put(name, x, y):
        kp[:, kpt.INDEX[name], 0] = x
        kp[:, kpt.INDEX[name], 1] = y

    put("nose", hx, hy + 0.15 * ry)
    put("neck", np.full_like(t, cx), np.full_like(t, 0.49 * H))
    mouth_y = hy + 0.55 * ry
    half_h = (0.008 + 0.03 * opening) * H
    put("mouth_top", hx, mouth_y - half_h)
    put("mouth_bottom", hx, mouth_y + half_h)
    put("chin", hx, hy + ry + 0.5 * half_h)
    upper, fore = 0.17 * H, 0.15 * H
    for side, sign in (("r", -1.0), ("l", 1.0)):  # the person's right arm is on image left
        sx, sy = cx + sign * 0.17 * H, 0.53 * H
        a1 = 0.35 + _smooth_wave(rng, t, 0.6 * energy) + 0.3 * energy  # from straight down, outward
        a2 = 0.6 + _smooth_wave(rng, t, 1.0 * energy) + 0.6 * energy  # elbow flex, forearm upward
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
    return {"kp": kp, "hx": hx, "hy": hy, "mouth_half_h": half_h, "energy": energy}


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
    H = float(height)
    kp = motion["kp"][i]
    P = {n: kp[kpt.INDEX[n], :2] for n in kpt.NAMES}
    c = Canvas(height, width, ident["bg_rgb"])
    skin, shirt, hair = ident["skin_rgb"], ident["shirt_rgb"], ident["hair_rgb"]
    hx, hy = motion["hx"][i], motion["hy"][i]
    rx, ry = ident["face_rx"] * H, ident["face_ry"] * H
    if ident["long_hair"]:
        c.rect(hx - 1.25 * rx, hy - 0.2 * ry, hx + 1.25 * rx, hy + 1.2 * ry, hair)
    # torso, then neck, then head
    cx = width / 2
    c.ellipse(cx, 0.83 * H, 0.21 * H, 0.34 * H, shirt)
    c.capsule(hx, hy + 0.8 * ry, P["neck"][0], P["neck"][1], 0.045 * H, skin)
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
        c.capsule(*sh, *el, 0.04 * H, shirt)
        c.capsule(*el, *wr, 0.03 * H, skin)
        c.ellipse(*wr, 0.045 * H, 0.045 * H, HAND_COLOR)
    if occluder is not None:
        c.rect(*occluder, (128, 128, 128))
    return c.uint8()


def _caption(ident: dict, motion: dict, said: str) -> str:
    action = "gesturing energetically with both hands" if motion["energy"] > 0.75 else "talking calmly with small gestures"
    return (f"A person with {ident['skin']} skin, {ident['hair']} {'long ' if ident['long_hair'] else ''}hair "
            f"and a {ident['shirt']} shirt in front of a {ident['background']} background, {action}, "
            f"saying: \"{said}\"")


# ----------------------------------------------------------------------------- clips

def render_clip(cfg: SynthConfig, index: int, out_dir: str, *, out_of_sync: bool,
                keypoints_mode: str, engine: str) -> dict:
    """Render clip `index` (seeded by (cfg.seed, index) only) into out_dir; -> its truth."""
    rng = np.random.default_rng([cfg.seed, index])
    height, width = cfg.size, cfg.width or cfg.size
    T = int(round(cfg.seconds * cfg.fps))
    ident = sample_identity(rng)
    wave, said, used = speech(rng, cfg.seconds, engine, ident["pitch"], ident["speed"])
    if out_of_sync:
        # the mouth follows another utterance (own seed stream, own leading silence)
        drv_rng = np.random.default_rng([cfg.seed, index, 1])
        driver, _, _ = speech(drv_rng, cfg.seconds, engine, ident["pitch"], ident["speed"])
    else:
        driver = wave
    opening = mouth_opening(driver, cfg.fps, T)
    motion = body_motion(rng, T, cfg.fps, height, width, ident, opening)
    kp = motion["kp"]
    occluder = None
    occluded_frames = np.zeros(T, bool)
    if keypoints_mode == "occluded":
        # a grey board over the person's right arm for a long stretch of the clip
        start = int(rng.integers(0, max(1, T // 4)))
        occluded_frames[start:] = True
        occluder = (0.0, 0.5 * height, width / 2 - 0.06 * height, float(height))
        x0, y0, x1, y1 = occluder
        inside = (kp[..., 0] >= x0) & (kp[..., 0] <= x1) & (kp[..., 1] >= y0) & (kp[..., 1] <= y1)
        kp[..., 2] = np.where(inside & occluded_frames[:, None], 0.0, kp[..., 2])
    elif keypoints_mode == "missing":
        lost = rng.random(T) < rng.uniform(0.6, 0.95)
        kp[lost, :, 2] = 0.0
    clip_id = f"clip_{index:06d}"
    base = os.path.join(out_dir, clip_id)
    with VideoWriter(base + ".mp4", cfg.fps, sample_rate=SAMPLE_RATE, crf=cfg.crf) as w:
        w.write_audio(wave)
        for i in range(T):
            w.write(render_frame(i, height, width, ident, motion, occluder if occluded_frames[i] else None))
    kpt.save_keypoints(base + kpt.SIDECAR_SUFFIX, kp, cfg.fps)
    caption = _caption(ident, motion, said)
    with open(base + ".txt", "w") as f:
        f.write(caption + "\n")
    meta = {"id": clip_id, "speech_engine": used, "said": said, "fps": cfg.fps, "frames": T,
            "width": width, "height": height, "sample_rate": SAMPLE_RATE,
            "identity": {k: v for k, v in ident.items() if k not in ("pitch", "speed")}}
    if used != "espeak":
        meta["speech_note"] = "espeak-ng not used: deterministic syllable fallback"
    with open(base + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    return {"out_of_sync": bool(out_of_sync), "keypoints": keypoints_mode, "speech_engine": used,
            "visible_fraction": kpt.visible_fraction(kp)}


def _engine(requested: str) -> str:
    if requested == "syllable":
        return "syllable"
    if espeak_available():
        return "espeak"
    if requested == "espeak":
        raise RuntimeError("--speech espeak asked for but espeak-ng is not on PATH (apt-get install espeak-ng)")
    log.warning("espeak-ng not found: SynthTalk speech falls back to the syllable synthesiser "
                "(recorded as speech_engine=syllable in each clip's metadata)")
    return "syllable"


def assign_weak(cfg: SynthConfig) -> tuple[np.ndarray, list[str]]:
    """Which clips are out of sync and which keypoints are occluded/missing (exact fractions)."""
    rng = np.random.default_rng([cfg.seed, 2**31 - 1])
    n = cfg.clips
    oos = np.zeros(n, bool)
    oos[rng.permutation(n)[: int(round(cfg.out_of_sync * n))]] = True
    modes = ["ok"] * n
    order = rng.permutation(n)
    n_occ, n_mis = int(round(cfg.occluded * n)), int(round(cfg.missing * n))
    for j in order[:n_occ]:
        modes[j] = "occluded"
    for j in order[n_occ:n_occ + n_mis]:
        modes[j] = "missing"
    return oos, modes


def generate(cfg: SynthConfig, out: str, progress: bool = True) -> dict:
    """Render the whole set into `out`; -> the truth dict (also written to truth.json)."""
    if (cfg.width or cfg.size) % 2 or cfg.size % 2:
        raise ValueError(f"size/width must be even (yuv420p), got {cfg.size}x{cfg.width or cfg.size}")
    if cfg.speech not in ("auto", "espeak", "syllable"):
        raise ValueError(f"speech must be auto|espeak|syllable, got {cfg.speech!r}")
    clips_dir = os.path.join(out, "clips")
    os.makedirs(clips_dir, exist_ok=True)
    engine = _engine(cfg.speech)
    oos, modes = assign_weak(cfg)
    truth = {}
    for i in tqdm(range(cfg.clips), desc="synth", unit="clip", disable=not progress):
        truth[f"clip_{i:06d}"] = render_clip(cfg, i, clips_dir, out_of_sync=bool(oos[i]),
                                             keypoints_mode=modes[i], engine=engine)
    with open(os.path.join(out, "synth.json"), "w") as f:
        json.dump(dataclasses.asdict(cfg) | {"speech_engine": engine}, f, indent=1)
    with open(os.path.join(out, "truth.json"), "w") as f:
        json.dump(truth, f, indent=1)
    return truth


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="omnijax synth", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="frame height (and width) in pixels, even")
    p.add_argument("--width", type=int, default=None, help="frame width if not square")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--out-of-sync", type=float, default=0.2, help="fraction of clips with mouth out of sync")
    p.add_argument("--occluded", type=float, default=0.1, help="fraction with an arm occluded")
    p.add_argument("--missing", type=float, default=0.05, help="fraction with keypoints mostly missing")
    p.add_argument("--speech", default="auto", choices=("auto", "espeak", "syllable"))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cfg = SynthConfig(clips=a.clips, seed=a.seed, size=a.size, width=a.width, fps=a.fps,
                      seconds=a.seconds, out_of_sync=a.out_of_sync, occluded=a.occluded,
                      missing=a.missing, speech=a.speech)
    truth = generate(cfg, a.out)
    n_oos = sum(t["out_of_sync"] for t in truth.values())
    print(f"wrote {len(truth)} clips to {a.out}/clips ({n_oos} out of sync, "
          f"{sum(t['keypoints'] != 'ok' for t in truth.values())} with occluded/missing keypoints)")
    return 0
