"""The two interfaces every frozen condition encoder implements, and frame-rate resampling.

Audio encoder: waveform + sample rate -> features at the *video* frame rate, `(T, D)`.
Text encoder: strings -> states `(B, L, D)` + mask `(B, L)`.

Preprocess and the sampler only ever see these interfaces; which encoder runs is a spec
string resolved by `omnijax.models.encoders.get_audio_encoder` / `get_text_encoder`.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class AudioEncoder(Protocol):
    name: str
    dim: int  # feature width D

    def __call__(self, wave: np.ndarray, sample_rate: int, fps: float,
                 num_frames: int | None = None) -> np.ndarray:
        """`wave` (N,) mono float -> `(num_frames, D)` float32 features, one row per video frame."""
        ...


class TextEncoder(Protocol):
    name: str
    dim: int  # state width D
    max_length: int  # L

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """-> states `(B, L, D)` float32 and mask `(B, L)` bool (True = real token)."""
        ...


def to_video_rate(features: np.ndarray, rate: float, fps: float, num_frames: int) -> np.ndarray:
    """Resample `features` `(N, D)` sampled at `rate` Hz to `num_frames` rows at `fps` Hz.

    A video frame i covers [i/fps, (i+1)/fps). When the features are denser than the video
    (mel at 100 Hz, wav2vec2 at 50 Hz vs 25 fps) each frame takes the mean of the feature
    rows whose centres fall in its interval, so no loudness peak is dropped by aliasing;
    when they are sparser, rows are linearly interpolated at the frame centres. Frames past
    the end of the audio repeat the last row (audio a few ms short of the video is common).
    """
    features = np.asarray(features, np.float32)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"features must be (N, D) with N > 0, got {features.shape}")
    n = features.shape[0]
    centres = (np.arange(n) + 0.5) / rate
    if rate >= fps:
        frame_of_row = np.floor(centres * fps).astype(np.int64)
        out = np.zeros((num_frames, features.shape[1]), np.float32)
        counts = np.zeros((num_frames,), np.int64)
        keep = frame_of_row < num_frames
        np.add.at(out, frame_of_row[keep], features[keep])
        np.add.at(counts, frame_of_row[keep], 1)
        filled = counts > 0
        out[filled] /= counts[filled, None]
        # Frames with no row (audio ended, or rate barely above fps) take the nearest row.
        if not filled.all():
            frame_centres = (np.arange(num_frames) + 0.5) / fps
            nearest = np.clip(np.round(frame_centres * rate - 0.5).astype(np.int64), 0, n - 1)
            out[~filled] = features[nearest[~filled]]
        return out
    frame_centres = (np.arange(num_frames) + 0.5) / fps
    pos = np.clip(frame_centres * rate - 0.5, 0, n - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (pos - lo)[:, None].astype(np.float32)
    return (1 - w) * features[lo] + w * features[hi]


def mono_waveform(wave: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """Any audio an encoder is given -> a float32 mono waveform `(N,)` at `target_rate` Hz.

    `(N, channels)` is averaged to mono; other sample rates are resampled with librosa.
    """
    wave = np.asarray(wave, np.float32)
    if wave.ndim == 2:  # (N, channels) -> mono
        wave = wave.mean(axis=1)
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"audio must be a non-empty mono waveform (N,), got shape {wave.shape}")
    if sample_rate != target_rate:
        import librosa  # only needed when resampling

        wave = librosa.resample(wave, orig_sr=sample_rate, target_sr=target_rate).astype(np.float32)
    return wave


def frames_in(wave_len: int, sample_rate: int, fps: float) -> int:
    """How many whole video frames `wave_len` samples of audio span."""
    return int(np.floor(wave_len / sample_rate * fps + 1e-6))
