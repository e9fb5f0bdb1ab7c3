"""Long video: segments chained by the motion-frame protocol, one compile for any length,
the audio decides the length, colour anchoring, and the generate / write_mp4 API."""

import numpy as np
import pytest

import export_helpers as eh
from omnijax import export
from omnijax.data import media
from omnijax.sample import long_video as lv
from omnijax.sample.bundle import load_bundle


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    root = tmp_path_factory.mktemp("lv")
    run = eh.fake_run(root / "run", eh.tiny_mmdit_config())
    out = export.export(run, str(root / "model"), vae="tiny", dtype="float32")
    return load_bundle(out)


def _speech(seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
            + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def test_plan_covers_the_video_with_one_segment_shape():
    assert lv.plan_segments(17, 17) == [0]
    assert lv.plan_segments(10, 17) == [0]                     # one segment, trimmed
    assert lv.plan_segments(18, 17) == [0, 12]
    assert lv.plan_segments(17 + 2 * 12, 17) == [0, 12, 24]
    assert lv.plan_segments(17 + 2 * 12 + 1, 17) == [0, 12, 24, 36]
    with pytest.raises(ValueError, match="motion"):
        lv.plan_segments(30, 5)


def test_three_segments_one_compile_motion_frames_are_the_last_five_decoded(model):
    """The prefix of segment k+1 is the VAE encoding of segment k's last 5 decoded frames
    (float, never through the mp4); every segment runs the one compiled program; the
    reference is in every segment; the frame count is the audio's."""
    seconds = (17 + 12 + 6) / 25                                 # 3 segments, the last trimmed
    wave = _speech(seconds)
    ref = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    segs = list(lv.generate_segments(model, ref=ref, audio=wave, text="a person talks",
                                     options=lv.Options(steps=2, solver="euler", blend_seams=False),
                                     progress=False))
    assert [s.start for s in segs] == [0, 12, 24]
    assert [s.frames.shape[0] for s in segs] == [17, 12, 6]
    assert lv.content_starts(segs) == [0, 17, 29]
    assert sum(s.frames.shape[0] for s in segs) == media_frames(wave)
    assert [s.compiles for s in segs] == [1, 1, 1]
    assert segs[0].prefix is None
    vae = model.vae
    for prev, nxt in zip(segs, segs[1:]):
        video = np.asarray(vae.decode(vae.denormalize(prev.latents[None])))
        want = np.asarray(vae.normalize(vae.encode(video[:, -5:])))[0]
        assert nxt.prefix.shape == (2, 4, 4, 16)
        np.testing.assert_allclose(nxt.prefix, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(nxt.latents[:2], nxt.prefix)      # clean frames pinned
    # frames are what the decoder gave: segment 1's new frames are decoded frames 5..16
    video1 = np.asarray(vae.decode(vae.denormalize(segs[1].latents[None])))[0]
    np.testing.assert_array_equal(segs[1].frames, media.to_uint8(video1[5:]))


def test_blended_seams_cross_fade_the_motion_frames_and_change_nothing_else(model):
    """With blend_seams the latents are the same (the motion frames come from the raw decode),
    the video has the same frames at the same times, and only the 5 frames before each seam
    differ: (1 - w) x the previous decode + w x this segment's decode of them, w = 1/6 .. 5/6."""
    wave = _speech((17 + 12 + 6) / 25)
    ref = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    run = lambda blend: list(lv.generate_segments(  # noqa: E731
        model, ref=ref, audio=wave, text="a person talks", progress=False,
        options=lv.Options(steps=2, solver="euler", blend_seams=blend)))
    plain, blended = run(False), run(True)
    for a, b in zip(plain, blended):
        np.testing.assert_array_equal(a.latents, b.latents)
    assert [s.frames.shape[0] for s in blended] == [12, 12, 11]
    assert lv.content_starts(blended) == lv.content_starts(plain) == [0, 17, 29]
    va, vb = (np.concatenate([s.frames for s in x]) for x in (plain, blended))
    assert va.shape == vb.shape
    vae = model.vae
    decoded = [np.asarray(vae.decode(vae.denormalize(s.latents[None])))[0] for s in plain]
    fade = np.arange(1, 6, dtype=np.float32)[:, None, None, None] / 6
    inside = np.ones(va.shape[0], bool)
    for k, s in enumerate(plain[1:], 1):
        window = slice(s.start, s.start + 5)
        inside[window] = False
        want = (1 - fade) * decoded[k - 1][-5:] + fade * decoded[k][:5]
        np.testing.assert_array_equal(vb[window], media.to_uint8(want))
    np.testing.assert_array_equal(vb[inside], va[inside])
    assert np.abs(vb[~inside].astype(int) - va[~inside]).max() > 0      # the fade did something


def media_frames(wave):
    from omnijax.models.encoders.base import frames_in
    return frames_in(wave.size, 16000, 25.0)


def test_text_only_length_from_seconds_and_any_condition_mix(model):
    frames = list(lv.generate(model, text="a man in a blue shirt", seconds=1.0,
                              options=lv.Options(steps=1, solver="euler"), progress=False))
    assert len(frames) == 25 and frames[0].shape == (32, 32, 3) and frames[0].dtype == np.uint8
    kp = np.zeros((30, 13, 3), np.float32)
    kp[..., :2] = 16.0
    kp[..., 2] = 1.0
    segs = list(lv.generate_segments(model, pose=kp, seconds=0.8,
                                     options=lv.Options(steps=1, solver="euler"), progress=False))
    assert sum(s.frames.shape[0] for s in segs) == 20
    with pytest.raises(ValueError, match="audio .* or seconds"):
        next(lv.generate_segments(model, text="x", progress=False))


def test_colour_anchor_moves_lab_statistics_to_the_target():
    rng = np.random.default_rng(0)
    frames = np.clip(rng.normal(0.2, 0.3, (4, 16, 16, 3)), -1, 1).astype(np.float32)
    target = lv.lab_stats(np.clip(rng.normal(-0.3, 0.2, (1, 16, 16, 3)), -1, 1))
    moved = lv.anchor_colours(frames, target)
    mean, std = lv.lab_stats(moved)
    np.testing.assert_allclose(mean, target[0], atol=1.5)       # Lab units (gamut clipping)
    np.testing.assert_allclose(std, target[1], rtol=0.15, atol=1.0)
    same = lv.anchor_colours(frames, lv.lab_stats(frames))
    np.testing.assert_allclose(same, frames, atol=2e-3)          # Lab round trip is exact-ish


def test_write_mp4_has_video_and_audio_and_never_leaves_a_partial_file(model, tmp_path):
    import av
    wave = _speech(1.3)
    frames = list(lv.generate(model, audio=wave, options=lv.Options(steps=1, solver="euler"),
                              progress=False))
    out = lv.write_mp4(str(tmp_path / "v.mp4"), frames, 25.0, wave)
    with av.open(out) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0]
        v_dur = float(v.duration * v.time_base)
        a_dur = float(a.duration * a.time_base)
        n = sum(1 for _ in c.decode(video=0))
    assert n == len(frames) == media_frames(wave)
    assert abs(v_dur - wave.size / 16000) <= 1 / 25 + 1e-6
    assert abs(a_dur - wave.size / 16000) <= 1 / 25 + 1e-6

    def interrupted():
        yield from frames[:5]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lv.write_mp4(str(tmp_path / "cut.mp4"), interrupted(), 25.0, wave)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
