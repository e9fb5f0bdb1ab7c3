"""Does a model follow its conditions? Sampled SynthTalk videos measured from their pixels.

For each held-out clip (in sync, keypoints visible) and each model, five videos of the
clip's length are sampled from the clip's first frame as the reference:

    text        text only (no reference, no audio, no pose)   the contact sheet
    audio       ref + text + audio                            lipsync.model, pose_error_px.no_pose
    pose        ref + text + pose                             lipsync.no_audio
    audio_pose  ref + text + audio + pose                     pose_error_px.model, fd_proxy
    mismatched  ref + text + another clip's audio             lipsync.mismatched

and measured against the clip's own audio and keypoints, next to references measured in
the same run: the clip itself (`truth`), the VAE's reconstruction of it (`vae`: what
latents can carry, the ceiling), the still reference (`still`). A long video (--seconds,
the held-out clips' speech end to end) gives the identity-drift curve per segment, the
distance to other identities for scale, and the seam ratio.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from omnijax.data import keypoints as kpt
from omnijax.data import media
from omnijax.eval import appearance, fd, lipsync, pose

SAMPLE_RATE = 16000


@dataclasses.dataclass
class Clip:
    name: str
    frames: np.ndarray          # (T, H, W, 3) uint8 at the model's size
    wave: np.ndarray            # mono float32 at 16 kHz
    keypoints: np.ndarray       # (T, 13, 3) in the frames' pixels
    caption: str
    fps: float

    @property
    def reference(self) -> np.ndarray:
        return self.frames[0]


def load_clips(data_dir: str, height: int, width: int, fps: float, limit: int | None = None,
               *, usable_only: bool = True) -> list[Clip]:
    """SynthTalk clips of `data_dir` (clips/ + truth.json), resized to the model's frame.
    `usable_only`: in-sync clips with visible keypoints (the truth file says which)."""
    from omnijax.data.preprocess import crop_resize, resample_keypoints, transform_keypoints
    from omnijax.errors import UsageError

    truth_path = os.path.join(data_dir, "truth.json")
    if not os.path.exists(truth_path) or not os.path.isdir(os.path.join(data_dir, "clips")):
        raise UsageError(f"--data {data_dir!r} is not a SynthTalk folder (expected clips/ and truth.json "
                         "from `omnijax synth --out DIR`)")
    with open(truth_path) as f:
        truth = json.load(f)
    names = sorted(n for n, t in truth.items()
                   if not usable_only or (not t["out_of_sync"] and t["keypoints"] == "ok"))
    out = []
    for name in names[: limit or None]:
        base = os.path.join(data_dir, "clips", name)
        frames = media.read_video(base + ".mp4", fps)
        wave, _ = media.read_audio(base + ".mp4", SAMPLE_RATE)
        kp, kp_fps = kpt.load_keypoints(base + kpt.SIDECAR_SUFFIX)
        kp = resample_keypoints(kp, kp_fps, fps, frames.shape[0])
        H0, W0 = frames.shape[1:3]
        if (H0, W0) != (height, width):
            frames = crop_resize(frames, height, width)
            kp = transform_keypoints(kp, H0, W0, height, width, 1.0)
        caption = open(base + ".txt").read().strip() if os.path.exists(base + ".txt") else ""
        out.append(Clip(name, frames, np.asarray(wave, np.float32), kp, caption, fps))
    if not out:
        raise UsageError(f"--data {data_dir!r}: no usable clip (in sync, keypoints visible) in truth.json")
    return out


def _sample(bundle, clip: Clip, options, *, audio=None, pose=False, ref=True, text=True,
            seconds=None) -> np.ndarray:
    from omnijax.sample import long_video as lv
    n = clip.frames.shape[0]
    kw = dict(ref=clip.reference if ref else None, text=clip.caption if text else None,
              pose=clip.keypoints if pose else None, pose_fps=clip.fps, options=options or lv.Options(),
              progress=False)
    if audio is not None:
        kw["audio"] = audio
    else:
        kw["seconds"] = seconds if seconds is not None else n / clip.fps
    frames = np.concatenate([s.frames for s in lv.generate_segments(bundle, **kw)])
    return frames[:n] if seconds is None else frames


def _fit(wave: np.ndarray, n: int) -> np.ndarray:
    """`wave` cut or zero-padded to exactly n samples."""
    return np.pad(wave, (0, max(0, n - wave.size)))[:n]


def vae_reconstruction(vae, frames: np.ndarray, window: int | None = None) -> np.ndarray:
    """The VAE's round trip of uint8 frames -> (N, H, W, 3) uint8.

    window: encode and decode each run of `window` frames as a fresh sequence, as the product
    does (preprocess caches 17-frame windows, the sampler decodes each segment on its own); a
    shorter tail goes in the longest 1 + 4k pieces, so every frame comes back.
    None: the whole clip as one streamed sequence (trailing frames that do not fill a 4-frame
    chunk dropped), a test of the causal cache beyond the length the VAE trained on."""
    if window is None:
        T = 1 + 4 * ((frames.shape[0] - 1) // 4)
        return media.to_uint8(np.asarray(vae.decode(vae.encode(media.to_float(frames[:T])[None])))[0])
    out, s = [], 0
    while frames.shape[0] - s >= 1:
        n = min(window, 1 + 4 * ((frames.shape[0] - s - 1) // 4))
        out.append(vae_reconstruction(vae, frames[s:s + n]))
        s += n
    return np.concatenate(out)


def psnr_windows(vae, frames: np.ndarray, window: int = 17, rec: np.ndarray | None = None) -> float:
    """Mean PSNR (dB, 8-bit peak) of the VAE's reconstruction over the clip's whole
    `window`-frame windows, each encoded as a fresh sequence (as preprocess caches them).
    rec: `vae_reconstruction(vae, frames, window)` when the caller has it (not run again)."""
    vals = []
    for s in range(0, frames.shape[0] - window + 1, window):
        w = frames[s:s + window]
        r = vae_reconstruction(vae, w) if rec is None else rec[s:s + window]
        mse = np.mean((r.astype(np.float64) - w.astype(np.float64)) ** 2)
        vals.append(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))
    return float(np.mean(vals)) if vals else float("nan")


def _mean_sync(results: list[dict]) -> dict:
    return {"peak": float(np.mean([r["peak"] for r in results])),
            "offset": int(np.median([r["offset"] for r in results])),
            "confidence": float(np.mean([r["confidence"] for r in results])),
            "clips": len(results)}


def _mean_pose(results: list[dict]) -> float:
    errs = [r["error_px"] for r in results if np.isfinite(r["error_px"])]
    return float(np.mean(errs)) if errs else float("nan")


def _excerpt(clip: Clip, seconds: float) -> Clip:
    n = min(clip.frames.shape[0], int(round(seconds * clip.fps)))
    samples = int(round(n / clip.fps * SAMPLE_RATE))
    return Clip(clip.name, clip.frames[:n], clip.wave[:samples], clip.keypoints[:n], clip.caption, clip.fps)


def evaluate_video(bundle, frames: np.ndarray, segment_starts: list[int], clip: Clip, others: list[Clip],
                   *, reference_seconds: float = 8.0, options=None) -> dict:
    """Metrics of a chained video `frames` sampled from `clip` (its first frame, audio, pose
    and caption), next to references sampled or measured on the first `reference_seconds`.

    Every lipsync / pose entry is measured on that same excerpt (the video's own first
    frames for `model`: segments are sampled in order with per-segment seeds, so they are
    what a shorter video would be); `*_full` are the whole video's figures. Drift and seams
    come from the whole chained video."""
    ex = _excerpt(clip, reference_seconds)
    n, sr, wave = ex.frames.shape[0], SAMPLE_RATE, ex.wave
    other = others[0]
    sync = lambda v, w=wave: lipsync.lipsync(v, w, sr, ex.fps, ref=clip.reference)  # noqa: E731
    no_audio = _sample(bundle, ex, options, pose=True)
    mismatched = _sample(bundle, ex, options, audio=_fit(other.wave, wave.size), pose=True)
    no_pose = _sample(bundle, ex, options, audio=wave)
    still = np.repeat(clip.reference[None], n, axis=0)
    window = int(bundle.video["frames_per_segment"])
    vae_rec = vae_reconstruction(bundle.vae, ex.frames, window)
    model = frames[:n]
    curve = appearance.drift_curve(frames, clip.reference, segment_starts)
    return {
        "lipsync": {"model": sync(model), "truth": sync(ex.frames), "vae": sync(vae_rec, wave),
                    "vae_streamed": sync(vae_reconstruction(bundle.vae, ex.frames), wave),
                    "still": sync(still), "mismatched": sync(mismatched), "no_audio": sync(no_audio),
                    "model_full": lipsync.lipsync(frames, clip.wave, sr, clip.fps, ref=clip.reference)},
        "pose_error_px": {"model": pose.pose_error_px(model, ex.keypoints),
                          "no_pose": pose.pose_error_px(no_pose, ex.keypoints),
                          "truth": pose.pose_error_px(ex.frames, ex.keypoints),
                          "still": pose.pose_error_px(still, ex.keypoints),
                          "model_full": pose.pose_error_px(frames, clip.keypoints[:frames.shape[0]])},
        "pose_found": pose.pose_error(model, ex.keypoints)["found"],
        "identity_drift": {"per_segment": curve, "segment_starts": list(segment_starts),
                           "other_identity": appearance.other_identity_distance(
                               clip.reference, [o.reference for o in others]),
                           "last_over_first": float(curve[-1] / max(curve[0], 1e-9)),
                           "seconds": frames.shape[0] / clip.fps, "segments": len(segment_starts)},
        "seam_ratio": appearance.seam_ratio(frames, segment_starts[1:]) if len(segment_starts) > 1 else None,
        "vae_psnr_db": psnr_windows(bundle.vae, clip.frames, window),
        "fd_proxy": fd.fd_proxy([clip.frames[:frames.shape[0]]], [frames]),
        "excerpt_frames": n,
    }


def evaluate_model(bundle, clips: list[Clip], others: list[Clip], *, options=None,
                   long_seconds: float | None = 20.0, progress=None) -> tuple[dict, dict]:
    """-> (metrics, artifacts) for one model. `others`: clips of other identities (their
    audio drives `mismatched`, their references scale the drift curve). Every video is
    sampled with `options` (`long_video.Options`; default: the export's sampler)."""
    from omnijax.sample import long_video as lv
    options = options or lv.Options()
    sync = {k: [] for k in ("model", "model_pose", "truth", "vae", "vae_streamed", "still", "mismatched",
                            "no_audio")}
    window = int(bundle.video["frames_per_segment"])
    psnr: list[float] = []
    pose_err = {k: [] for k in ("model", "no_pose", "truth", "still")}
    found = []
    gen_clips, real_clips, first = [], [], {}
    for i, clip in enumerate(clips):
        n, sr = clip.frames.shape[0], SAMPLE_RATE
        wave = clip.wave
        other = others[i % len(others)] if others else clips[(i + 1) % len(clips)]
        s = lambda frames: lipsync.lipsync(frames, wave, sr, clip.fps, ref=clip.reference)  # noqa: E731
        videos = {
            "audio": _sample(bundle, clip, options, audio=wave),
            "pose": _sample(bundle, clip, options, pose=True),
            "audio_pose": _sample(bundle, clip, options, audio=wave, pose=True),
            "mismatched": _sample(bundle, clip, options, audio=_fit(other.wave, wave.size)),
        }
        if i == 0:
            videos["text"] = _sample(bundle, clip, options, ref=False)
            first = dict(videos, truth=clip.frames)
        still = np.repeat(clip.reference[None], n, axis=0)
        sync["model"].append(s(videos["audio"]))
        sync["model_pose"].append(s(videos["audio_pose"]))
        sync["no_audio"].append(s(videos["pose"]))
        sync["mismatched"].append(s(videos["mismatched"]))
        sync["truth"].append(s(clip.frames))
        # the round trip the sampler makes (one segment at a time), and the whole clip streamed
        vae_rec = vae_reconstruction(bundle.vae, clip.frames, window)
        psnr.append(psnr_windows(bundle.vae, clip.frames, window, rec=vae_rec))
        sync["vae"].append(s(vae_rec))
        sync["vae_streamed"].append(s(vae_reconstruction(bundle.vae, clip.frames)))
        sync["still"].append(s(still))
        pm = pose.pose_error(videos["audio_pose"], clip.keypoints)
        found.append(pm["found"])
        pose_err["model"].append(pm)
        pose_err["no_pose"].append(pose.pose_error(videos["audio"], clip.keypoints))
        pose_err["truth"].append(pose.pose_error(clip.frames, clip.keypoints))
        pose_err["still"].append(pose.pose_error(still, clip.keypoints))
        gen_clips.append(videos["audio_pose"])
        real_clips.append(clip.frames)
        if progress:
            progress(i + 1, len(clips))

    metrics: dict[str, Any] = {
        "lipsync": {k: _mean_sync(v) for k, v in sync.items()},
        "pose_error_px": {k: _mean_pose(v) for k, v in pose_err.items()},
        "pose_found": float(np.mean(found)),
        "vae_psnr_db": float(np.mean(psnr)),
        "fd_proxy": fd.fd_proxy(real_clips, gen_clips),
    }
    artifacts = {"first": first}
    # ---- a long chained video: drift per segment, distance to others, seams
    clip = clips[0]
    if long_seconds:
        pool = [c.wave for c in clips + others]
        need = int(long_seconds * SAMPLE_RATE)
        speech = np.concatenate([pool[i % len(pool)] for i in range(-(-need // min(p.size for p in pool)) + 1)])
        segs = list(lv.generate_segments(bundle, ref=clip.reference, audio=speech[:need], text=clip.caption,
                                         options=options, progress=False))
        frames = np.concatenate([sg.frames for sg in segs])
        starts = lv.content_starts(segs)
        refs = [o.reference for o in others] or [c.reference for c in clips[1:]]
        curve = appearance.drift_curve(frames, clip.reference, starts)
        metrics["identity_drift"] = {
            "per_segment": curve, "segment_starts": starts,
            "other_identity": appearance.other_identity_distance(clip.reference, refs) if refs else None,
            "last_over_first": float(curve[-1] / max(curve[0], 1e-9)),
            "seconds": float(long_seconds), "segments": len(segs), "color_anchor": options.color_anchor,
            "blend_seams": options.blend_seams}
        metrics["seam_ratio"] = appearance.seam_ratio(frames, starts[1:]) if len(starts) > 1 else None
        artifacts["long_video"] = frames
    return metrics, artifacts
