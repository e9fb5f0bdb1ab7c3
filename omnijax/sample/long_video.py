"""Videos of any length: segments of one shape chained by motion frames (README "Long video").

    segment 0      latents [n0 n1 n2 ... nF-1]        T = 1 + 4(F - 1) new frames
    segment k > 0  latents [m0 m1 | n2 ... nF-1]      m = VAE.encode(last 5 decoded frames
                                                      of segment k - 1, float, never mp4)
                   video frames s_k .. s_k + T - 1,   s_k = k (T - 5); frames 5.. are new
    seam k         frames s_k .. s_k + 4 cross-fade from segment k - 1's decode to segment k's
                   (its decode of the re-encoded motion frames), `Options.blend_seams`

Every segment is the same jitted program (`segment.SegmentFunction`: the first one's empty
prefix is a mask, not a shape), the reference image is in every segment, and audio features
and pose heatmaps are sliced from the video timeline for frames s_k .. s_k + T - 1 (the
motion frames' own audio included). A finished segment is decoded at once by the VAE and
its new frames leave as uint8, so memory does not grow with the number of segments; the
audio decides the length (the last segment is trimmed, never padded with silence in the
output).

This module owns the side effects of sampling (reading inputs, progress); the segment
function is pure. `generate_segments` yields per-segment records (frames, latents, the
prefix it was given) for evaluation and tests; `generate` yields frames; `write_mp4`
writes them with the audio.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Iterator

import jax.numpy as jnp
import numpy as np

from omnijax.data import keypoints as kpt
from omnijax.data import media
from omnijax.models.encoders.base import frames_in
from omnijax.sample import segment as seg
from omnijax.sample.bundle import Bundle, load_bundle

MOTION_VIDEO_FRAMES = 5      # = 2 latent frames of a fresh causal sequence (1 frame, then 4)


@dataclasses.dataclass
class Options:
    """How to sample. None = the export's default (export.json "sampler")."""

    solver: str | None = None
    steps: int | None = None
    cfg_text: tuple[float, float] | None = None
    cfg_audio: tuple[float, float] | None = None
    schedule: str | None = None
    seed: int = 0
    color_anchor: bool = False       # match each segment's Lab statistics to the reference
    # cross-fade the previous segment's last 5 frames into this one's re-decoded motion frames
    # (the same 5 video frames after a VAE round trip): the round trip's shift is spread over
    # 5 frames instead of jumping at the seam
    blend_seams: bool = True


@dataclasses.dataclass
class Segment:
    index: int
    start: int                       # video frame of the segment's frame 0
    frames: np.ndarray               # (n, H, W, 3) uint8: the frames this segment emits (see
                                     # `generate_segments`); concatenated, they are the video
    latents: np.ndarray              # (F, h, w, c) normalised latents
    prefix: np.ndarray | None        # (2, h, w, c) the clean motion latents it was given
    seconds: float                   # wall time of this segment (denoise + decode)
    compiles: int                    # programs the segment function has compiled so far


def content_starts(segments) -> list[int]:
    """Video frame where each segment's own frames begin (after the motion frames it was
    handed): the seams, for evaluation. Frame 0 for the first segment."""
    return [0] + [sg.start + MOTION_VIDEO_FRAMES for sg in list(segments)[1:]]


def plan_segments(num_frames: int, frames_per_segment: int, motion: int = MOTION_VIDEO_FRAMES
                  ) -> list[int]:
    """Start frame of each segment covering `num_frames` video frames."""
    T = frames_per_segment
    if T <= motion:
        raise ValueError(f"segments of {T} frames cannot hand {motion} motion frames on")
    extra = max(0, num_frames - T)
    return [k * (T - motion) for k in range(1 + -(-extra // (T - motion)))]


# ----------------------------------------------------------------------------- colour anchor

def _rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (..., 3) -> CIE Lab (D65)."""
    c = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = c @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    fy = (lab[..., 0] + 16) / 116
    f = np.stack([fy + lab[..., 1] / 500, fy, fy - lab[..., 2] / 200], -1)
    xyz = np.where(f ** 3 > 216 / 24389, f ** 3, (116 * f - 16) / (24389 / 27)) * np.array([0.95047, 1.0, 1.08883])
    m = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    c = np.clip(xyz @ m.T, 0, 1)
    return np.where(c > 0.0031308, 1.055 * c ** (1 / 2.4) - 0.055, 12.92 * c)


def lab_stats(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel Lab mean and std of float frames in [-1, 1]."""
    lab = _rgb_to_lab((np.asarray(frames, np.float64) + 1) / 2).reshape(-1, 3)
    return lab.mean(0), lab.std(0) + 1e-6


def anchor_colours(frames: np.ndarray, target: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Float frames [-1, 1] with their Lab mean/std moved to `target`'s: a drifting
    segment's global colour is pulled back to the reference before it becomes motion frames."""
    lab = _rgb_to_lab((np.asarray(frames, np.float64) + 1) / 2)
    mean, std = lab.reshape(-1, 3).mean(0), lab.reshape(-1, 3).std(0) + 1e-6
    lab = (lab - mean) / std * target[1] + target[0]
    return (_lab_to_rgb(lab) * 2 - 1).astype(np.float32)


# ----------------------------------------------------------------------------- inputs

def prepare_reference(image: np.ndarray, height: int, width: int) -> tuple[np.ndarray, bool]:
    """(H0, W0, 3) uint8 -> centre-cropped, resized (height, width, 3); -> (image, changed)."""
    from omnijax.data.preprocess import crop_resize
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise ValueError(f"reference image must be (H, W, 3) RGB, got {image.shape}")
    image = image[..., :3].astype(np.uint8)
    if image.shape[:2] == (height, width):
        return image, False
    return crop_resize(image[None], height, width)[0], True


def pose_for(keypoints: np.ndarray, kp_fps: float, fps: float, num_frames: int, source_hw: tuple[int, int],
             height: int, width: int, scale: float) -> np.ndarray:
    """Keypoints (N, 13, 3) in `source_hw` pixels at kp_fps -> (num_frames, 13, 3) in heatmap
    pixels of the model's frame (the same crop + resize + scale preprocess applies)."""
    from omnijax.data.preprocess import resample_keypoints, transform_keypoints
    kp = resample_keypoints(kpt.check_keypoints(keypoints), kp_fps, fps, num_frames)
    return transform_keypoints(kp, source_hw[0], source_hw[1], height, width, scale)


class _Timeline:
    """Whole-video conditions as host arrays, sliced per segment."""

    def __init__(self, bundle: Bundle, *, wave, keypoints, kp_fps, pose_hw, text, ref, total):
        v, mc = bundle.video, bundle.mmdit.config
        self.T, self.total = v["frames_per_segment"], total
        sr, fps = v["sample_rate"], v["fps"]
        self.has_audio = wave is not None
        if self.has_audio:
            pad = int(np.ceil(total / fps * sr)) - wave.size
            padded = np.pad(wave, (0, max(pad, 0)))          # the tail's silence is context only
            self.audio = np.asarray(bundle.audio_encoder(padded, sr, fps, total), np.float32)
        else:
            self.audio = np.zeros((total, mc.audio_dim), np.float32)
        if self.audio.shape[1] != mc.audio_dim:
            raise ValueError(f"audio encoder {bundle.meta['encoders']['audio']!r} gives {self.audio.shape[1]} "
                             f"features, the model expects audio_dim={mc.audio_dim}")
        self.hp, self.wp = round(v["height"] * mc.pose_scale), round(v["width"] * mc.pose_scale)
        self.sigma = bundle.meta["pose"]["sigma"] * self.hp
        self.kp = None
        if keypoints is not None:
            self.kp = pose_for(keypoints, kp_fps, fps, total, pose_hw or (v["height"], v["width"]),
                               v["height"], v["width"], mc.pose_scale)
        states, mask = bundle.text_encoder([text or ""])
        self.text, self.text_mask = np.asarray(states, np.float32), np.asarray(mask, bool)
        if self.text.shape[-1] != mc.text_dim:
            raise ValueError(f"text encoder gives {self.text.shape[-1]}-d states, the model expects "
                             f"text_dim={mc.text_dim}")
        self.has_text = bool(text)
        self.ref = ref

    def window(self, start: int) -> dict[str, np.ndarray]:
        sl = slice(start, start + self.T)
        pose = (kpt.heatmaps(self.kp[sl], self.hp, self.wp, self.sigma) if self.kp is not None
                else np.zeros((self.T, self.hp, self.wp, kpt.NUM_KEYPOINTS), np.float32))
        return {"audio": self.audio[sl][None], "pose": pose[None], "text": self.text,
                "text_mask": self.text_mask, "has_audio": np.array([self.has_audio]),
                "has_pose": np.array([self.kp is not None]), "has_text": np.array([self.has_text])}


# ----------------------------------------------------------------------------- the loop

def _spec(bundle: Bundle, options: Options, timeline: _Timeline) -> seg.SegmentSpec:
    d = bundle.meta["sampler"]
    pick = lambda name: d[name] if getattr(options, name) is None else getattr(options, name)  # noqa: E731
    return seg.SegmentSpec(solver=pick("solver"), steps=int(pick("steps")),
                           shift=float(bundle.recipe["flow_shift"]),
                           cfg_text=tuple(pick("cfg_text")), cfg_audio=tuple(pick("cfg_audio")),
                           schedule=pick("schedule"), use_text=timeline.has_text,
                           use_audio=timeline.has_audio)


def generate_segments(model, *, ref: np.ndarray | None = None, audio: np.ndarray | None = None,
                      pose: np.ndarray | None = None, pose_fps: float | None = None,
                      pose_size: tuple[int, int] | None = None, text: str | None = None,
                      seconds: float | None = None, options: Options | None = None,
                      compute_dtype: str | None = "auto", progress: bool = True) -> Iterator[Segment]:
    """Sample a video segment by segment (see the module docstring).

    model: an export directory or a loaded `Bundle`. ref: (H, W, 3) uint8, cropped/resized
    to the model's frame. audio: mono float waveform at the export's sample rate (16 kHz);
    it sets the length, else `seconds`. pose: keypoints (N, 13, 3) in `pose_size` (H, W)
    pixels (default: the model's frame) at `pose_fps` (default: the video fps). text: caption.

    Each record's `frames` are what it emits. Without `blend_seams`: segment 0 all its T
    frames, segment k > 0 its frames 5.. (after the motion frames). With it (the default),
    every segment but the last holds its last 5 frames back, and the next emits them
    cross-faded into its own decode of those 5 frames (weights 1/6 .. 5/6 toward the new
    decode), then its frames 5..: the same frame count and the same frame times.
    """
    options = options or Options()
    bundle = model if isinstance(model, Bundle) else load_bundle(model, compute_dtype=_auto(compute_dtype))
    v = bundle.video
    fps, T = v["fps"], v["frames_per_segment"]
    if audio is not None:
        total = frames_in(np.asarray(audio).size, v["sample_rate"], fps)
    elif seconds is not None:
        total = int(round(seconds * fps))
    else:
        raise ValueError("give audio (it sets the length) or seconds")
    if total < 1:
        raise ValueError(f"the video would have {total} frames: audio or seconds too short")
    starts = plan_segments(total, T)
    vae, mc = bundle.vae, bundle.mmdit.config
    h, w = v["height"] // 8, v["width"] // 8
    F = bundle.recipe["latent_frames"]
    ref_latent, anchor = np.zeros((1, 1, h, w, mc.latent_channels), np.float32), None
    if ref is not None:
        img, _ = prepare_reference(ref, v["height"], v["width"])
        ref_video = media.to_float(img)[None, None]
        ref_latent = np.asarray(vae.normalize(vae.encode(ref_video)), np.float32)
        anchor = lab_stats(ref_video) if options.color_anchor else None
    timeline = _Timeline(bundle, wave=None if audio is None else np.asarray(audio, np.float32),
                         keypoints=pose, kp_fps=pose_fps or fps, pose_hw=pose_size, text=text,
                         ref=ref_latent, total=starts[-1] + T)
    spec = _spec(bundle, options, timeline)
    fn = bundle.segment_fns.get(spec)
    if fn is None:
        fn = bundle.segment_fns[spec] = seg.SegmentFunction(bundle.mmdit, spec)
    from tqdm import tqdm
    bar = tqdm(total=len(starts), unit="segment", desc="sample", disable=not progress)
    prefix, emitted, held = None, 0, None
    M = MOTION_VIDEO_FRAMES
    fade = (np.arange(1, M + 1, dtype=np.float32) / (M + 1))[:, None, None, None]
    try:
        for k, start in enumerate(starts):
            t0 = time.perf_counter()
            rng = np.random.default_rng([options.seed, k])
            context = np.zeros((1, F, h, w, mc.latent_channels), np.float32)
            clean = np.zeros((1, F), bool)
            if prefix is not None:
                context[0, :prefix.shape[0]] = prefix
                clean[0, :prefix.shape[0]] = True
            inputs = {"noise": rng.standard_normal(context.shape, np.float32), "context": context,
                      "clean": clean, "ref": ref_latent, "has_ref": np.array([ref is not None]),
                      **timeline.window(start)}
            latents = np.asarray(fn(inputs))
            video = np.asarray(vae.decode(vae.denormalize(jnp.asarray(latents))))[0]   # (T, H, W, 3)
            if anchor is not None:
                video = anchor_colours(video, anchor)
            given = prefix
            # the next segment's motion frames: the last 5 decoded frames, in float
            prefix = np.asarray(vae.normalize(vae.encode(video[None, -M:])))[0]
            if k == 0:
                new = video
            elif held is not None:
                new = np.concatenate([(1 - fade) * held + fade * video[:M], video[M:]])
            else:
                new = video[M:]
            if options.blend_seams and k < len(starts) - 1:
                new, held = new[:-M], video[-M:]
            new = new[: total - emitted]
            emitted += new.shape[0]
            bar.update(1)
            yield Segment(k, start, media.to_uint8(new), latents[0], given, time.perf_counter() - t0,
                          fn.compiles)
    finally:
        bar.close()


def _auto(compute_dtype: str | None) -> str | None:
    """'auto': float32 matmuls on a CPU (no fast bf16 there), the export's dtype elsewhere."""
    if compute_dtype != "auto":
        return compute_dtype
    import jax
    return "float32" if jax.default_backend() == "cpu" else None


def generate(model, **kw) -> Iterator[np.ndarray]:
    """Frames (H, W, 3) uint8 of a generated video, in order (arguments: `generate_segments`)."""
    for segment in generate_segments(model, **kw):
        yield from segment.frames


def write_mp4(path: str, frames, fps: float, audio: np.ndarray | None = None,
              sample_rate: int = 16000) -> str:
    """Frames (+ the audio, muxed) -> an H.264/AAC mp4, written to a temporary name and
    renamed when whole: a crash or Ctrl-C leaves no truncated file at `path`."""
    with media.VideoWriter(path, fps, sample_rate=sample_rate if audio is not None else None) as w:
        if audio is not None:
            w.write_audio(np.asarray(audio, np.float32))
        for frame in frames:
            w.write(frame)
    return path
