"""Video and audio in and out: PyAV decode (resampled to a target fps / sample rate),
soundfile for wav/flac, and an mp4 writer (H.264 + AAC) that takes frames as they come.

Every failure names the file: a missing, truncated or corrupt file, a file without a
video (or audio) stream, a clip shorter than asked all raise `MediaError` (a ValueError),
so preprocess can skip and count them.
"""

from __future__ import annotations

import dataclasses
import fractions
import os
from typing import Iterator

import av
import numpy as np
import soundfile as sf

AUDIO_ONLY_SUFFIXES = (".wav", ".flac", ".ogg")
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi")


class MediaError(ValueError):
    """A media file that cannot be used; the message names the file and the problem."""


class NoAudioError(MediaError):
    """The file has no audio stream."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: float
    duration: float  # seconds, from the container (may be approximate)
    num_frames: int  # from the stream header; 0 when the container does not say
    has_audio: bool
    sample_rate: int  # 0 without audio


def _open(path: str | os.PathLike):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MediaError(f"{path}: file not found")
    if os.path.getsize(path) == 0:
        raise MediaError(f"{path}: file is empty")
    try:
        return av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        raise MediaError(f"{path}: cannot open as media, corrupt or truncated? ({e})") from None


def probe(path: str | os.PathLike) -> VideoInfo:
    path = os.fspath(path)
    with _open(path) as c:
        if not c.streams.video:
            raise MediaError(f"{path}: no video stream")
        v = c.streams.video[0]
        fps = float(v.average_rate or v.guessed_rate or 0)
        if fps <= 0:
            raise MediaError(f"{path}: video stream has no frame rate")
        dur = float(v.duration * v.time_base) if v.duration else (c.duration or 0) / av.time_base
        a = c.streams.audio[0] if c.streams.audio else None
        return VideoInfo(path, v.codec_context.width, v.codec_context.height, fps, dur,
                         int(v.frames or 0), a is not None, int(a.rate) if a else 0)


def iter_frames(path: str | os.PathLike, fps: float | None = None) -> Iterator[np.ndarray]:
    """Decoded frames `(H, W, 3)` uint8 RGB, resampled to `fps` when given.

    Resampling by time: output frame i (time i / fps) is the source frame nearest that
    time (ties go to the later frame), so 30 -> 25 fps drops frames and 20 -> 25 repeats
    some; decoding streams, memory stays flat.
    """
    path = os.fspath(path)
    with _open(path) as c:
        if not c.streams.video:
            raise MediaError(f"{path}: no video stream")
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        src_fps = float(stream.average_rate or stream.guessed_rate or 25)
        start = None
        out_i = 0
        prev, prev_t = None, None
        try:
            for frame in c.decode(stream):
                img = frame.to_ndarray(format="rgb24")
                if fps is None:
                    yield img
                    continue
                if frame.pts is None:
                    raise MediaError(f"{path}: frames have no timestamps; cannot resample to {fps} fps")
                t = float(frame.pts * stream.time_base)
                start = t if start is None else start
                t -= start
                # prev is nearest for every output time before the midpoint to this frame
                while prev is not None and out_i / fps < 0.5 * (prev_t + t) - 1e-9:
                    yield prev
                    out_i += 1
                prev, prev_t = img, t
            if prev is not None and fps is not None:
                # the last source frame covers half a source interval past its time
                end = prev_t + 0.5 / src_fps
                while out_i / fps < end - 1e-9:
                    yield prev
                    out_i += 1
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: decoding failed, corrupt or truncated? ({e})") from None


def read_video(path: str | os.PathLike, fps: float | None = None, *, start: int = 0,
               num_frames: int | None = None) -> np.ndarray:
    """Frames `[start, start + num_frames)` at `fps` -> `(T, H, W, 3)` uint8.

    Raises MediaError when the clip has fewer frames than asked.
    """
    path = os.fspath(path)
    frames = []
    for i, img in enumerate(iter_frames(path, fps)):
        if i < start:
            continue
        if num_frames is not None and len(frames) >= num_frames:
            break
        frames.append(img)
    if num_frames is not None and len(frames) < num_frames:
        raise MediaError(f"{path}: clip is shorter than asked: {start + len(frames)} frames"
                         f"{f' at {fps} fps' if fps else ''}, need {start + num_frames}")
    if not frames:
        raise MediaError(f"{path}: no decodable video frames")
    return np.stack(frames)


def _to_mono(wave: np.ndarray) -> np.ndarray:
    return wave.mean(axis=1) if wave.ndim == 2 else wave


def read_audio(path: str | os.PathLike, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """Mono float32 waveform `(N,)` and its rate; resampled to `sample_rate` when given.

    wav/flac/ogg go through soundfile; anything else (mp4, mov, webm, m4a) through PyAV.
    """
    path = os.fspath(path)
    if path.lower().endswith(AUDIO_ONLY_SUFFIXES):
        if not os.path.exists(path):
            raise MediaError(f"{path}: file not found")
        try:
            wave, sr = sf.read(path, dtype="float32", always_2d=False)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise MediaError(f"{path}: cannot read audio ({e})") from None
        wave = _to_mono(wave)
        if sample_rate and sr != sample_rate:
            wave = _resample(wave, sr, sample_rate)
            sr = sample_rate
        return np.ascontiguousarray(wave, np.float32), int(sr)
    with _open(path) as c:
        if not c.streams.audio:
            raise NoAudioError(f"{path}: no audio stream")
        stream = c.streams.audio[0]
        rate = int(sample_rate or stream.rate)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        chunks = []
        first_t = None
        try:
            for frame in c.decode(stream):
                if first_t is None and frame.pts is not None:
                    first_t = float(frame.pts * stream.time_base)
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: audio decoding failed, corrupt or truncated? ({e})") from None
    if not chunks:
        raise MediaError(f"{path}: audio stream holds no samples")
    wave = np.concatenate(chunks).astype(np.float32)
    # A stream that starts late (positive start pts) is padded so sample 0 is time 0.
    if first_t and first_t > 0:
        wave = np.concatenate([np.zeros(int(round(first_t * rate)), np.float32), wave])
    return wave, rate


def _resample(wave: np.ndarray, sr: int, target: int) -> np.ndarray:
    import librosa  # heavy import, only when needed

    return librosa.resample(np.asarray(wave, np.float32), orig_sr=sr, target_sr=target)


def write_wav(path: str | os.PathLike, wave: np.ndarray, sample_rate: int) -> None:
    sf.write(os.fspath(path), np.asarray(wave, np.float32), sample_rate, subtype="PCM_16")


def to_uint8(frame: np.ndarray) -> np.ndarray:
    """float [-1, 1] or uint8 frames -> uint8."""
    frame = np.asarray(frame)
    if frame.dtype == np.uint8:
        return frame
    return np.clip(np.round((frame.astype(np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def to_float(frames: np.ndarray) -> np.ndarray:
    """uint8 frames -> float32 in [-1, 1] (the contract's video range)."""
    return np.asarray(frames, np.float32) / 127.5 - 1.0


class VideoWriter:
    """mp4 writer: H.264 (libx264, yuv420p) video + optional AAC audio, frames as they come.

        with VideoWriter("out.mp4", fps=25, sample_rate=16000) as w:
            w.write_audio(wave)          # any time, any number of chunks
            for frame in frames:         # (H, W, 3) uint8 or float in [-1, 1]
                w.write(frame)

    Audio is encoded up to each video frame's end time as frames arrive (interleaved, so
    memory stays flat for any length); what is left is flushed on close. The file is
    written to `path + ".part"` and renamed when complete, so a crash never leaves a
    truncated mp4 under the real name.
    """

    def __init__(self, path: str | os.PathLike, fps: float, *, sample_rate: int | None = None,
                 crf: int = 18, preset: str = "veryfast"):
        self.path = os.fspath(path)
        self.fps = fractions.Fraction(fps).limit_denominator(1001)
        self.sample_rate = sample_rate
        self._tmp = self.path + ".part"
        self._c = av.open(self._tmp, mode="w", format="mp4")
        self._crf, self._preset = crf, preset
        self._v = None
        self._a = None
        if sample_rate:
            self._a = self._c.add_stream("aac", rate=int(sample_rate))
            self._a.layout = "mono"
        self._pending = np.zeros((0,), np.float32)
        self._audio_written = 0
        self.frames_written = 0

    def _open_video(self, h: int, w: int):
        if h % 2 or w % 2:
            raise ValueError(f"{self.path}: yuv420p needs even width and height, got {w}x{h}")
        self._v = self._c.add_stream("libx264", rate=self.fps)
        self._v.width, self._v.height, self._v.pix_fmt = w, h, "yuv420p"
        self._v.options = {"crf": str(self._crf), "preset": self._preset}

    def write(self, frame: np.ndarray) -> None:
        frame = to_uint8(frame)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"{self.path}: frames must be (H, W, 3), got {frame.shape}")
        if self._v is None:
            self._open_video(*frame.shape[:2])
        elif frame.shape[:2] != (self._v.height, self._v.width):
            raise ValueError(f"{self.path}: frame {self.frames_written} is {frame.shape[:2]}, "
                             f"earlier frames were {(self._v.height, self._v.width)}")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.frames_written
        vf.time_base = 1 / self.fps
        for pkt in self._v.encode(vf):
            self._c.mux(pkt)
        self.frames_written += 1
        if self._a is not None:
            upto = int(round(self.frames_written / float(self.fps) * self.sample_rate))
            self._encode_audio(upto)

    def write_audio(self, wave: np.ndarray) -> None:
        if self._a is None:
            raise ValueError(f"{self.path}: writer was opened without sample_rate; no audio stream")
        wave = _to_mono(np.asarray(wave, np.float32))
        self._pending = np.concatenate([self._pending, wave])

    def _encode_audio(self, upto: int | None) -> None:
        n = self._pending.shape[0] if upto is None else max(0, min(upto - self._audio_written,
                                                                   self._pending.shape[0]))
        if n == 0:
            return
        chunk, self._pending = self._pending[:n], self._pending[n:]
        af = av.AudioFrame.from_ndarray(chunk[None, :].astype(np.float32), format="fltp", layout="mono")
        af.sample_rate = int(self.sample_rate)
        af.pts = self._audio_written
        af.time_base = fractions.Fraction(1, int(self.sample_rate))
        for pkt in self._a.encode(af):
            self._c.mux(pkt)
        self._audio_written += n

    def close(self) -> None:
        if self._c is None:
            return
        if self._v is None:
            self._c.close()
            os.remove(self._tmp)
            self._c = None
            raise ValueError(f"{self.path}: no frames were written")
        for pkt in self._v.encode(None):
            self._c.mux(pkt)
        if self._a is not None:
            self._encode_audio(None)
            for pkt in self._a.encode(None):
                self._c.mux(pkt)
        self._c.close()
        self._c = None
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if self._c is not None:
            self._c.close()
            self._c = None
        if os.path.exists(self._tmp):
            os.remove(self._tmp)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(path: str | os.PathLike, frames, fps: float, audio: np.ndarray | None = None,
                sample_rate: int | None = None, **kw) -> None:
    """Convenience: write an iterable of frames (+ whole audio) to an mp4."""
    with VideoWriter(path, fps, sample_rate=sample_rate if audio is not None else None, **kw) as w:
        if audio is not None:
            w.write_audio(audio)
        for f in frames:
            w.write(f)
