"""Log-mel audio features at the video frame rate: the weight-free default audio encoder."""

from __future__ import annotations

import dataclasses

import librosa
import numpy as np

from omnijax.models.encoders.base import frames_in, mono_waveform, to_video_rate


@dataclasses.dataclass(frozen=True)
class MelEncoder:
    """Log-mel spectrogram (librosa) with a 10 ms hop, pooled to one row per video frame.

    Output is `log(mel + 1e-5)` standardised by fixed constants (not per clip, so loudness
    differences between clips survive: the mouth must follow loudness).
    """

    n_mels: int = 80
    sample_rate: int = 16000
    n_fft: int = 400  # 25 ms window, the usual speech setting
    hop_ms: float = 10.0
    name: str = "mel"

    @property
    def dim(self) -> int:
        return self.n_mels

    def __call__(self, wave: np.ndarray, sample_rate: int, fps: float,
                 num_frames: int | None = None) -> np.ndarray:
        wave = mono_waveform(wave, sample_rate, self.sample_rate)
        if num_frames is None:
            num_frames = frames_in(wave.shape[0], self.sample_rate, fps)
        hop = int(round(self.sample_rate * self.hop_ms / 1000))
        mel = librosa.feature.melspectrogram(
            y=wave, sr=self.sample_rate, n_fft=self.n_fft, hop_length=hop,
            n_mels=self.n_mels, center=True, power=2.0)
        logmel = (np.log(mel + 1e-5) + 5.0) / 4.0  # roughly zero-mean, unit-scale for speech
        return to_video_rate(logmel.T, self.sample_rate / hop, fps, num_frames)
