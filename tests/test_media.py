"""Media I/O: mp4 (H.264 + AAC) round trips, fps resampling, and clear errors for bad files."""

import os

import av
import numpy as np
import pytest

from omnijax.data import media

SR = 16000


def _frames(n, h=48, w=64):
    """Smooth frames whose frame index is readable from a bright band's brightness."""
    base = np.linspace(40, 200, w).astype(np.uint8)[None, None, :, None].repeat(h, 1).repeat(3, 3)
    out = np.repeat(base, n, axis=0).copy()
    for i in range(n):
        out[i, :8] = 20 + 7 * i  # frame i: top band at 20 + 7i (inside video range 16-235)
    return out


def _index_of(frame):
    return int(round((float(frame[:8].mean()) - 20) / 7))


def _tone(seconds, start):
    t = np.arange(int(seconds * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * 330 * t) * (t >= start)).astype(np.float32)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("media") / "clip.mp4")
    frames, wave = _frames(25), _tone(1.0, 0.4)
    with media.VideoWriter(path, 25, sample_rate=SR) as w:
        w.write_audio(wave[: SR // 2])  # audio may arrive in chunks, interleaved with frames
        for i, f in enumerate(frames):
            w.write(f)
            if i == 3:
                w.write_audio(wave[SR // 2:])
    return path, frames, wave


def test_round_trip_video_and_audio(clip):
    path, frames, wave = clip
    info = media.probe(path)
    assert (info.width, info.height, info.fps, info.has_audio, info.sample_rate) == (64, 48, 25.0, True, SR)
    got = media.read_video(path)
    assert got.shape == frames.shape and got.dtype == np.uint8
    assert np.abs(got.astype(float) - frames).mean() < 2.0
    assert [_index_of(f) for f in got] == list(range(25))
    audio, sr = media.read_audio(path, SR)
    assert sr == SR and abs(audio.size - wave.size) < 1100  # AAC pads to its 1024-sample frames
    onset = np.argmax(np.abs(audio) > 0.1) / SR
    assert abs(onset - 0.4) < 0.002  # the muxed audio is aligned with the video
    seg = slice(int(0.5 * SR), int(0.9 * SR))
    assert np.corrcoef(audio[seg], wave[seg])[0, 1] > 0.99


def test_fps_resampling_picks_frames_by_time(tmp_path):
    path = str(tmp_path / "30fps.mp4")
    media.write_video(path, _frames(30), fps=30)
    got = media.read_video(path, fps=25)
    assert got.shape[0] == 25  # one second at 25 fps
    # output frame i shows the source frame nearest time i/25 (ties: the later one)
    assert [_index_of(f) for f in got] == [int(np.floor(i * 30 / 25 + 0.5)) for i in range(25)]
    up = media.read_video(path, fps=50)
    assert up.shape[0] == 50 and [_index_of(f) for f in up[:6]] == [0, 1, 1, 2, 2, 3]


def test_start_and_length_and_short_clip_error(clip):
    path, _, _ = clip
    got = media.read_video(path, start=5, num_frames=4)
    assert [_index_of(f) for f in got] == [5, 6, 7, 8]
    with pytest.raises(media.MediaError, match=r"clip\.mp4: clip is shorter than asked"):
        media.read_video(path, num_frames=26)


def test_wav_and_flac_with_resampling(tmp_path):
    wave = _tone(0.5, 0.1)
    for ext in ("wav", "flac"):
        p = str(tmp_path / f"a.{ext}")
        media.write_wav(p, wave, SR) if ext == "wav" else __import__("soundfile").write(p, wave, SR)
        same, sr = media.read_audio(p)
        assert sr == SR and np.abs(same - wave).max() < 1e-3
        up, sr2 = media.read_audio(p, 22050)
        assert sr2 == 22050 and abs(up.size - int(0.5 * 22050)) <= 2


def test_errors_name_the_file(tmp_path, clip):
    missing = str(tmp_path / "nope.mp4")
    with pytest.raises(media.MediaError, match="nope.mp4: file not found"):
        media.read_video(missing)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(media.MediaError, match="empty.mp4: file is empty"):
        media.probe(str(empty))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(media.MediaError, match="junk.mp4"):
        media.read_video(str(junk))
    data = open(clip[0], "rb").read()
    cut = tmp_path / "truncated.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(media.MediaError, match="truncated.mp4"):
        media.read_video(str(cut), num_frames=25)


def test_no_video_stream_and_no_audio_stream(tmp_path):
    audio_only = str(tmp_path / "speech.m4a")
    with av.open(audio_only, "w", format="mp4") as c:
        s = c.add_stream("aac", rate=SR)
        s.layout = "mono"
        f = av.AudioFrame.from_ndarray(_tone(0.3, 0.0)[None], format="fltp", layout="mono")
        f.sample_rate = SR
        for pkt in list(s.encode(f)) + list(s.encode(None)):
            c.mux(pkt)
    with pytest.raises(media.MediaError, match="speech.m4a: no video stream"):
        media.read_video(audio_only)
    silent = str(tmp_path / "silent.mp4")
    media.write_video(silent, _frames(5), fps=25)
    with pytest.raises(media.NoAudioError, match="silent.mp4: no audio stream"):
        media.read_audio(silent)


def test_writer_leaves_nothing_on_error_and_checks_shapes(tmp_path):
    path = str(tmp_path / "broken.mp4")
    with pytest.raises(RuntimeError):
        with media.VideoWriter(path, 25) as w:
            w.write(_frames(1)[0])
            raise RuntimeError("boom")
    assert not os.path.exists(path) and not os.path.exists(path + ".part")
    with pytest.raises(ValueError, match="earlier frames were"):
        with media.VideoWriter(str(tmp_path / "x.mp4"), 25) as w:
            w.write(_frames(1)[0])
            w.write(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="even width and height"):
        with media.VideoWriter(str(tmp_path / "odd.mp4"), 25) as w:
            w.write(np.zeros((15, 16, 3), np.uint8))


def test_float_frames_are_written_in_the_contract_range(tmp_path):
    path = str(tmp_path / "f.mp4")
    frames = _frames(3).astype(np.float32) / 127.5 - 1.0
    media.write_video(path, frames, fps=25)
    back = media.to_float(media.read_video(path))
    assert np.abs(back - frames).mean() < 0.02
