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

`--framing` picks the shot: `full` (the whole person, the default), `half` (medium shot,
head and torso, hands in frame) or `head` (close-up, hands come and go); at 32-64 px only
the closer shots give the mouth enough pixels to learn lip-sync from. `--mouth-scale`
widens how far the mouth opens (up to 2x). Both are a camera and a geometry change only:
keypoints stay the exact pixel positions of what is drawn (`omnijax.data.synthetic_render`).

Weak data on purpose: a fraction of clips have a mouth driven by *another* utterance's
envelope (out of sync), and fractions have an occluder over one arm (those keypoints are
marked invisible) or keypoints missing for most frames (a detector that lost the person).

`omnijax synth --out DIR --clips N --seed S --size 64 --fps 25 --seconds 4 [--framing half]`

Every argument is checked before anything is written: a mistake is one `UsageError` line.
"""

from __future__ import annotations

import colorsys
import dataclasses
import json
import logging
import math
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
from omnijax.data.synthetic_render import (EYE_COLOR, FRAMINGS, HAND_COLOR, MAX_MOUTH_SCALE,  # noqa: F401
                                           MOUTH_COLOR, Camera, Canvas, body_motion, render_frame)
from omnijax.errors import ArgumentParser, UsageError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
SPEECH_ENGINES = ("auto", "espeak", "syllable")
MIN_SIZE, MAX_FPS = 16, 120.0

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
    framing: str = "full"  # full | half | head (see synthetic_render.FRAMINGS)
    mouth_scale: float = 1.0  # how far the mouth opens, x the original range (<= 2)


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


VOWELS = ((730, 1090), (270, 2290), (300, 870), (530, 1840), (640, 1190))  # (F1, F2), Hz


def _syllable(rng: np.random.Generator, f0: float, render: bool) -> np.ndarray | None:
    """One voiced syllable (harmonics shaped by a vowel's formants); render=False draws
    exactly the same random numbers and returns None."""
    dur = int(rng.uniform(0.12, 0.25) * SAMPLE_RATE)
    f1, f2 = VOWELS[int(rng.integers(len(VOWELS)))]
    vibrato = rng.uniform(1, 3)
    level = rng.uniform(0.5, 1.0)
    if not render:
        return None
    t = np.arange(dur) / SAMPLE_RATE
    pitch = f0 * (1 + 0.1 * np.sin(2 * np.pi * vibrato * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    s = np.zeros(dur)
    for h in range(1, 30):
        fh = h * f0
        gain = np.exp(-((fh - f1) / 150) ** 2) + 0.6 * np.exp(-((fh - f2) / 200) ** 2) + 0.02
        s += gain * np.sin(h * phase)
    env = np.sin(np.pi * np.arange(dur) / dur) ** 0.7 * level
    return (s * env / 6).astype(np.float32)


def _syllables(rng: np.random.Generator, seconds: float, f0: float) -> np.ndarray:
    """Deterministic fallback speech: voiced syllables grouped into words with pauses;
    loudness rises and falls like speech."""
    out = np.zeros(int(seconds * SAMPLE_RATE) + SAMPLE_RATE, np.float32)
    pos = 0
    while pos < out.size - SAMPLE_RATE // 2:
        for _ in range(int(rng.integers(1, 4))):
            # Only the word loop checks the buffer end, so a word's later syllables can start
            # past it (the gap after a syllable cut at the end overshoots; `end - pos` would be
            # negative). Such a syllable is not written but still draws its random numbers: the
            # rng goes on to drive the body's motion, and seeds that rendered before must not change.
            seg = _syllable(rng, f0, render=pos < out.size)
            if seg is not None:
                end = min(pos + seg.size, out.size)
                out[pos:end] = seg[: end - pos]
                pos = end
            pos += int(rng.uniform(0.03, 0.08) * SAMPLE_RATE)
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


# ----------------------------------------------------------------------------- clips

def _caption(ident: dict, motion: dict, said: str) -> str:
    action = "gesturing energetically with both hands" if motion["energy"] > 0.75 else "talking calmly with small gestures"
    return (f"A person with {ident['skin']} skin, {ident['hair']} {'long ' if ident['long_hair'] else ''}hair "
            f"and a {ident['shirt']} shirt in front of a {ident['background']} background, {action}, "
            f"saying: \"{said}\"")


def _weaken(rng: np.random.Generator, kp: np.ndarray, mode: str, cam: Camera, height: int, width: int
            ) -> tuple[tuple[float, float, float, float] | None, np.ndarray]:
    """Hide keypoints as `mode` says (in place) -> (occluder box in pixels or None, frames it covers)."""
    T = kp.shape[0]
    occluder = None
    occluded_frames = np.zeros(T, bool)
    if mode == "occluded":
        # a grey board over the person's right arm for a long stretch of the clip; it is part
        # of the scene, so the camera frames it like the body
        start = int(rng.integers(0, max(1, T // 4)))
        occluded_frames[start:] = True
        occluder = cam.box(0.0, 0.5 * height, width / 2 - 0.06 * height, float(height))
        x0, y0, x1, y1 = occluder
        inside = (kp[..., 0] >= x0) & (kp[..., 0] <= x1) & (kp[..., 1] >= y0) & (kp[..., 1] <= y1)
        kp[..., 2] = np.where(inside & occluded_frames[:, None], 0.0, kp[..., 2])
    elif mode == "missing":
        lost = rng.random(T) < rng.uniform(0.6, 0.95)
        kp[lost, :, 2] = 0.0
    return occluder, occluded_frames


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
    motion = body_motion(rng, T, cfg.fps, height, width, ident, opening,
                         framing=cfg.framing, mouth_scale=cfg.mouth_scale)
    kp = motion["kp"]
    occluder, occluded_frames = _weaken(rng, kp, keypoints_mode, motion["camera"], height, width)
    clip_id = f"clip_{index:06d}"
    base = os.path.join(out_dir, clip_id)
    with VideoWriter(base + ".mp4", cfg.fps, sample_rate=SAMPLE_RATE, crf=cfg.crf) as w:
        w.write_audio(wave)
        for i in range(T):
            w.write(render_frame(i, height, width, ident, motion, occluder if occluded_frames[i] else None))
    kpt.save_keypoints(base + kpt.SIDECAR_SUFFIX, kp, cfg.fps)
    with open(base + ".txt", "w") as f:
        f.write(_caption(ident, motion, said) + "\n")
    cam = motion["camera"]
    meta = {"id": clip_id, "speech_engine": used, "said": said, "fps": cfg.fps, "frames": T,
            "width": width, "height": height, "sample_rate": SAMPLE_RATE,
            "framing": cfg.framing, "mouth_scale": cfg.mouth_scale,
            "camera": {"scale": cam.scale, "offset": [cam.ox, cam.oy]},  # pixel = scale * full shot + offset
            "identity": {k: v for k, v in ident.items() if k not in ("pitch", "speed")}}
    if used != "espeak":
        meta["speech_note"] = "espeak-ng not used: deterministic syllable fallback"
    with open(base + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    return {"out_of_sync": bool(out_of_sync), "keypoints": keypoints_mode, "speech_engine": used,
            "visible_fraction": kpt.visible_fraction(kp, height, width)}


def _engine(requested: str) -> str:
    if requested == "syllable":
        return "syllable"
    if espeak_available():
        return "espeak"
    if requested == "espeak":
        raise UsageError("--speech espeak: espeak-ng is not on PATH "
                         "(apt-get install espeak-ng, or use --speech syllable / auto)")
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


def _whole(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def validate(cfg: SynthConfig) -> None:
    """UsageError naming the command-line flag of the first setting that cannot render."""
    def bad(field: str, expected: str):
        raise UsageError(f"--{field.replace('_', '-')} {getattr(cfg, field)!r}: expected {expected}")

    if not _whole(cfg.clips) or cfg.clips < 1:
        bad("clips", "a whole number of clips >= 1")
    if not _whole(cfg.seed) or cfg.seed < 0:
        bad("seed", "a whole number >= 0 (numpy cannot seed from a negative one)")
    for field in ("size", "width"):
        v = getattr(cfg, field)
        if v is not None and (not _whole(v) or v < MIN_SIZE or v % 2):
            bad(field, f"an even number of pixels >= {MIN_SIZE} (H.264 yuv420p needs even sizes)")
    if not (math.isfinite(cfg.fps) and 0 < cfg.fps <= MAX_FPS):
        bad("fps", f"frames per second in (0, {MAX_FPS:g}]")
    if not (math.isfinite(cfg.seconds) and cfg.seconds > 0):
        bad("seconds", "a clip length in seconds > 0")
    if cfg.seconds * cfg.fps < 1:
        raise UsageError(f"--seconds {cfg.seconds:g} at --fps {cfg.fps:g} is less than one frame: "
                         "expected --seconds >= 1 / fps")
    for field in ("out_of_sync", "occluded", "missing"):
        if not 0 <= getattr(cfg, field) <= 1:  # NaN fails too
            bad(field, "a fraction of the clips in [0, 1]")
    if cfg.occluded + cfg.missing > 1:
        raise UsageError(f"--occluded {cfg.occluded:g} + --missing {cfg.missing:g} > 1: expected the "
                         "two fractions to sum to at most 1 (a clip gets one or the other)")
    if cfg.speech not in SPEECH_ENGINES:
        bad("speech", " | ".join(SPEECH_ENGINES))
    if cfg.framing not in FRAMINGS:
        bad("framing", " | ".join(FRAMINGS))
    if not 0 < cfg.mouth_scale <= MAX_MOUTH_SCALE:
        bad("mouth_scale", f"a factor in (0, {MAX_MOUTH_SCALE:g}] (beyond it the open mouth reaches past the chin)")
    if not _whole(cfg.crf) or not 0 <= cfg.crf <= 51:
        bad("crf", "an H.264 quality in [0, 51]")


def _check_out(out: str) -> None:
    """UsageError unless `out` is, or can be created as, a directory."""
    if not out:
        raise UsageError("--out: no directory given")
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise UsageError(f"--out {out!r} is a file, expected a directory")
        return
    parent = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out!r}: cannot create it ({parent!r} is not a writable directory)")


def generate(cfg: SynthConfig, out: str, progress: bool = True) -> dict:
    """Render the whole set into `out`; -> the truth dict (also written to truth.json).

    Settings, `out` and the speech engine are checked before anything is created."""
    validate(cfg)
    _check_out(out)
    engine = _engine(cfg.speech)
    clips_dir = os.path.join(out, "clips")
    os.makedirs(clips_dir, exist_ok=True)
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
    p = ArgumentParser(prog="omnijax synth", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="frame height (and width) in pixels, even, >= 16")
    p.add_argument("--width", type=int, default=None, help="frame width if not square")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--out-of-sync", type=float, default=0.2, help="fraction of clips with mouth out of sync")
    p.add_argument("--occluded", type=float, default=0.1, help="fraction with an arm occluded")
    p.add_argument("--missing", type=float, default=0.05, help="fraction with keypoints mostly missing")
    p.add_argument("--speech", default="auto", choices=SPEECH_ENGINES)
    p.add_argument("--framing", default="full", choices=tuple(FRAMINGS),
                   help="full: whole person; half: head and torso, hands in frame; head: close-up")
    p.add_argument("--mouth-scale", type=float, default=1.0,
                   help=f"how far the mouth opens, x the default range, in (0, {MAX_MOUTH_SCALE:g}]")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cfg = SynthConfig(clips=a.clips, seed=a.seed, size=a.size, width=a.width, fps=a.fps,
                      seconds=a.seconds, out_of_sync=a.out_of_sync, occluded=a.occluded,
                      missing=a.missing, speech=a.speech, framing=a.framing, mouth_scale=a.mouth_scale)
    truth = generate(cfg, a.out)
    n_oos = sum(t["out_of_sync"] for t in truth.values())
    print(f"wrote {len(truth)} clips to {a.out}/clips ({n_oos} out of sync, "
          f"{sum(t['keypoints'] != 'ok' for t in truth.values())} with occluded/missing keypoints)")
    return 0
