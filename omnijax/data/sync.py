"""Audio-visual sync score measured from pixels: does the mouth move with the speech?

The mouth signal is the total *darkness* of each frame: sum over pixels of
max(0, 1 - luma / threshold). In a SynthTalk frame the open mouth is the only thing darker
than the threshold (hair, eyes, shirts and backgrounds are kept lighter), so the signal
grows with the mouth's open area and is blind to where the head or hands are. Nothing from
the generator (keypoints, truth file) is read: the score comes from the decoded frames and
the decoded audio alone.

The score is the Pearson correlation of that signal with the audio loudness envelope (RMS
per video frame), maximised over small lags (codec delays shift audio by a frame or two).
An in-sync clip scores high (~0.7-0.95), a mouth driven by other speech scores near 0.

For real footage the same interface would take a mouth-opening signal from a face
landmarker (Sync-MAR: README "Evaluation", `omnijax eval --real`); the darkness proxy is
specific to SynthTalk.
"""

from __future__ import annotations

import dataclasses

import numpy as np



@dataclasses.dataclass(frozen=True)
class SyncConfig:
    dark_threshold: float = 0.2  # luma in [0, 1] below which a pixel counts as mouth interior
    max_lag: int = 1  # frames, either way
    min_score: float = 0.7  # audio_ok = score >= min_score (unrelated speech reaches ~0.6 on 2 s clips)


def loudness_envelope(wave: np.ndarray, sample_rate: int, fps: float, num_frames: int) -> np.ndarray:
    """RMS of the audio in each video frame's interval [i/fps, (i+1)/fps) -> `(num_frames,)`."""
    edges = np.round(np.arange(num_frames + 1) * sample_rate / fps).astype(np.int64)
    sq = np.concatenate([[0.0], np.cumsum(np.asarray(wave, np.float64) ** 2)])
    edges = np.clip(edges, 0, wave.size)
    counts = np.maximum(edges[1:] - edges[:-1], 1)
    return np.sqrt((sq[edges[1:]] - sq[edges[:-1]]) / counts).astype(np.float32)


def luma(frames: np.ndarray) -> np.ndarray:
    """uint8 `(T, H, W, 3)` -> BT.601 luma in [0, 1], `(T, H, W)`."""
    f = np.asarray(frames, np.float32) / 255.0
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def mouth_signal(frames: np.ndarray, dark_threshold: float = 0.2) -> np.ndarray:
    """Mouth openness proxy per frame from pixels: `(T,)` float32 (in pixel units of area)."""
    y = luma(frames)
    return np.clip(1.0 - y / dark_threshold, 0.0, None).sum(axis=(1, 2)).astype(np.float32)


def lagged_correlation(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[float, int]:
    """max over lag in [-max_lag, max_lag] of corr(a[t], b[t + lag]) -> (score, lag).

    A constant signal (a still mouth, silence) has no correlation: score 0."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    best, best_lag = -1.0, 0
    n = min(a.size, b.size)
    for lag in range(-max_lag, max_lag + 1):
        x = a[max(0, -lag): n - max(0, lag)]
        y = b[max(0, lag): n - max(0, -lag) + 0]
        m = min(x.size, y.size)
        x, y = x[:m], y[:m]
        if m < 3 or x.std() < 1e-8 or y.std() < 1e-8:
            c = 0.0
        else:
            c = float(np.corrcoef(x, y)[0, 1])
        if c > best:
            best, best_lag = c, lag
    return best, best_lag


def sync_score(frames: np.ndarray, wave: np.ndarray, sample_rate: int, fps: float,
               cfg: SyncConfig = SyncConfig()) -> tuple[float, int]:
    """Clip frames `(T, H, W, 3)` uint8 + its mono audio -> (score, lag in frames).

    A positive lag means the mouth trails the audio."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {frames.shape}")
    env = loudness_envelope(wave, sample_rate, fps, frames.shape[0])
    return lagged_correlation(env, mouth_signal(frames, cfg.dark_threshold), cfg.max_lag)
