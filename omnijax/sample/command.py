"""`omnijax sample`: one photo + any mix of audio, pose and text -> an mp4 of any length.

    omnijax sample --model models/s3 --ref photo.png --audio speech.wav --out out.mp4
        [--pose keypoints.json] [--pose-size HxW] [--text "a woman waves"] [--seconds S]
        [--steps N] [--sampler unipc|euler|heun] [--cfg-text A[,B]] [--cfg-audio A[,B]]
        [--seed K] [--color-anchor] [--no-blend-seams] [--compute-dtype auto|float32|bfloat16]

Every input is read and checked before the model is loaded or anything is written; a
mistake is one line naming the argument (exit 2). The audio decides the length (else
--seconds). The mp4 (H.264 + the audio as AAC) is written under a temporary name and
renamed when whole, so a crash or Ctrl-C never leaves a truncated file at --out.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import numpy as np

from omnijax.errors import ArgumentParser, UsageError, require_file
from omnijax.sample.bundle import read_meta

log = logging.getLogger(__name__)


def parse_scale(text: str, what: str) -> tuple[float, float]:
    """'4' -> (4, 4); '6,3' -> (6, 3): a guidance scale, annealed from the first to the second."""
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or not all(np.isfinite(parts)):
        raise UsageError(f"{what} {text!r}: expected a number or START,END (e.g. 6,3)")
    return (parts[0], parts[-1])


def parse_size(text: str, what: str) -> tuple[int, int]:
    try:
        h, w = (int(p) for p in text.lower().split("x"))
        if h > 0 and w > 0:
            return h, w
    except ValueError:
        pass
    raise UsageError(f"{what} {text!r}: expected HEIGHTxWIDTH in pixels, e.g. 64x64")


def read_image(path: str, what: str = "--ref") -> np.ndarray:
    from PIL import Image, UnidentifiedImageError
    require_file(path, what)
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise UsageError(f"{what} {path!r} is not a readable image ({e.__class__.__name__})") from None


def read_speech(path: str, sample_rate: int, what: str = "--audio") -> np.ndarray:
    from omnijax.data import media
    require_file(path, what)
    try:
        wave, _ = media.read_audio(path, sample_rate)
    except Exception as e:  # PyAV / soundfile raise many types for unreadable media
        raise UsageError(f"{what} {path!r} is not readable audio ({e})") from None
    if wave.size == 0:
        raise UsageError(f"{what} {path!r} holds no samples")
    return np.asarray(wave, np.float32)


def read_pose(path: str, what: str = "--pose") -> tuple[np.ndarray, float]:
    from omnijax.data import keypoints as kpt
    require_file(path, what)
    try:
        return kpt.load_keypoints(path)
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{what} {path!r}: expected {kpt.NUM_KEYPOINTS} keypoints per frame in "
                         f"omnijax's layout ({', '.join(kpt.NAMES)}): {e}") from None


def check_out(path: str) -> str:
    if not path.lower().endswith(".mp4"):
        raise UsageError(f"--out {path!r}: expected a .mp4 path")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"--out {path!r}: directory {parent!r} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"--out {path!r} is a directory")
    return path


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="omnijax sample", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="an `omnijax export` directory")
    p.add_argument("--ref", help="reference photo (png/jpg): the identity; centre-cropped to the model's frame")
    p.add_argument("--audio", help="speech (wav/flac/mp3/mp4 ...): drives the mouth and sets the length")
    p.add_argument("--pose", help="keypoints JSON as `omnijax synth` writes (13 keypoints per frame)")
    p.add_argument("--pose-size", help="HEIGHTxWIDTH of the frames the keypoints are measured in "
                                       "(default: the model's frame)")
    p.add_argument("--text", help="caption")
    p.add_argument("--seconds", type=float, help="length without --audio")
    p.add_argument("--steps", type=int, help="denoising steps (default: the export's)")
    p.add_argument("--sampler", choices=("unipc", "euler", "heun"), help="solver (default: the export's)")
    p.add_argument("--cfg-text", help="text guidance scale, or START,END annealed over the steps")
    p.add_argument("--cfg-audio", help="audio guidance scale, or START,END annealed over the steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--color-anchor", action="store_true",
                   help="match each segment's Lab colour statistics to the reference (less drift)")
    p.add_argument("--no-blend-seams", dest="blend_seams", action="store_false",
                   help="cut from segment to segment instead of cross-fading the 5 motion frames")
    p.add_argument("--compute-dtype", default="auto", choices=("auto", "float32", "bfloat16"),
                   help="matmul dtype; auto = float32 on CPU, the export's dtype elsewhere")
    p.add_argument("--out", required=True, help="output .mp4")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    # ---------------------------------------------------------------- validate everything first
    meta = read_meta(a.model)
    video = meta["video"]
    check_out(a.out)
    if a.steps is not None and a.steps < 1:
        raise UsageError(f"--steps {a.steps}: expected an integer >= 1")
    if a.seconds is not None and not (np.isfinite(a.seconds) and a.seconds > 0):
        raise UsageError(f"--seconds {a.seconds}: expected a positive number")
    cfg_text = parse_scale(a.cfg_text, "--cfg-text") if a.cfg_text else None
    cfg_audio = parse_scale(a.cfg_audio, "--cfg-audio") if a.cfg_audio else None
    ref = read_image(a.ref) if a.ref else None
    wave = read_speech(a.audio, int(video["sample_rate"])) if a.audio else None
    pose, pose_fps = read_pose(a.pose) if a.pose else (None, None)
    pose_size = parse_size(a.pose_size, "--pose-size") if a.pose_size else None
    if wave is None and a.seconds is None:
        raise UsageError("give --audio (it sets the video's length) or --seconds")
    notices = []
    if wave is not None and float(np.abs(wave).max()) < 1e-4:
        notices.append(f"warning: --audio {a.audio!r} is silent: the mouth has nothing to follow")
    if ref is None:
        notices.append("notice: no --ref: identity comes from the text" if a.text
                       else "notice: no --ref and no --text: the identity is the model's free choice")
    elif ref.shape[:2] != (video["height"], video["width"]):
        notices.append(f"notice: --ref {ref.shape[1]}x{ref.shape[0]} is centre-cropped and resized to "
                       f"the model's {video['width']}x{video['height']}")
    for n in notices:
        print(n, file=sys.stderr)

    # ---------------------------------------------------------------- sample and write
    from omnijax.sample import long_video as lv
    from omnijax.sample.bundle import load_bundle

    bundle = load_bundle(a.model, compute_dtype=lv._auto(a.compute_dtype))
    options = lv.Options(solver=a.sampler, steps=a.steps, cfg_text=cfg_text, cfg_audio=cfg_audio,
                         seed=a.seed, color_anchor=a.color_anchor, blend_seams=a.blend_seams)
    t0 = time.perf_counter()
    segments = lv.generate_segments(bundle, ref=ref, audio=wave, pose=pose, pose_fps=pose_fps,
                                    pose_size=pose_size, text=a.text, seconds=a.seconds,
                                    options=options, progress=not a.quiet)
    count = [0]

    def frames():
        for s in segments:
            count[0] += s.frames.shape[0]
            yield from s.frames

    lv.write_mp4(a.out, frames(), video["fps"], wave, int(video["sample_rate"]))
    took = time.perf_counter() - t0
    seconds = count[0] / video["fps"]
    print(f"wrote {a.out}: {count[0]} frames ({seconds:.2f} s of video at {video['fps']:g} fps) in "
          f"{took:.1f} s ({seconds / max(took, 1e-9):.2f} s of video per second)")
    return 0
