"""SynthTalk: deterministic per seed, on-disk layout of real data, and ground truth that the
pixels and audio agree with (mouth follows loudness, hands are where the keypoints say)."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from data_helpers import synth_set
from omnijax import cli
from omnijax.data import keypoints as kpt
from omnijax.data import media, sync, synthetic
from omnijax.data.sync import loudness_envelope
from omnijax.errors import UsageError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.getbasetemp()


@pytest.fixture(scope="module")
def sset(root):
    return synth_set(root, "synth_main", clips=6, out_of_sync=0.34, occluded=0.17, missing=0.17)


def _clip(sset, cid):
    base = os.path.join(sset, "clips", cid)
    return (media.read_video(base + ".mp4"), media.read_audio(base + ".mp4", 16000)[0],
            kpt.load_keypoints(base + kpt.SIDECAR_SUFFIX)[0])


def test_layout_and_truth(sset):
    truth = json.load(open(os.path.join(sset, "truth.json")))
    assert sorted(truth) == [f"clip_{i:06d}" for i in range(6)]
    assert sum(t["out_of_sync"] for t in truth.values()) == 2  # exact fractions of 6
    assert sorted(t["keypoints"] for t in truth.values()).count("ok") == 4
    for cid, t in truth.items():
        base = os.path.join(sset, "clips", cid)
        info = media.probe(base + ".mp4")
        assert (info.width, info.height, info.fps, info.has_audio) == (64, 64, 25.0, True)
        kp, fps = kpt.load_keypoints(base + kpt.SIDECAR_SUFFIX)
        assert kp.shape == (50, 13, 3) and fps == 25.0
        caption = open(base + ".txt").read()
        meta = json.load(open(base + ".json"))
        assert meta["identity"]["shirt"] in caption and meta["said"] in caption
        assert meta["speech_engine"] == t["speech_engine"]
        if t["keypoints"] == "ok":
            assert kpt.visible_fraction(kp) == 1.0
        else:
            assert kpt.visible_fraction(kp) < 0.85


def test_same_seed_same_clips_other_seed_differs(root, sset, tmp_path):
    # a clip depends only on (seed, index) and its weak-data flags: re-render two of them
    truth = json.load(open(os.path.join(sset, "truth.json")))
    cfg = synthetic.SynthConfig(**{k: v for k, v in json.load(open(os.path.join(sset, "synth.json"))).items()
                                   if k != "speech_engine"})
    again = str(tmp_path)
    os.makedirs(os.path.join(again, "clips"))
    for i in (0, 1):
        t = truth[f"clip_{i:06d}"]
        synthetic.render_clip(cfg, i, os.path.join(again, "clips"), out_of_sync=t["out_of_sync"],
                              keypoints_mode=t["keypoints"], engine=t["speech_engine"])
    other = synth_set(root, "synth_seed1", clips=2, seed=1)
    for cid in ("clip_000000", "clip_000001"):
        v1, a1, k1 = _clip(sset, cid)
        v2, a2, k2 = _clip(again, cid)
        np.testing.assert_array_equal(v1, v2)
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(k1, k2)
        assert open(os.path.join(sset, "clips", cid + ".txt")).read() == \
            open(os.path.join(again, "clips", cid + ".txt")).read()
        v3, _, _ = _clip(other, cid)
        assert np.abs(v1.astype(float) - v3).mean() > 5


def test_mouth_opening_follows_the_audio_envelope(sset):
    truth = json.load(open(os.path.join(sset, "truth.json")))
    for cid, t in truth.items():
        _, wave, kp = _clip(sset, cid)
        env = loudness_envelope(wave, 16000, 25.0, kp.shape[0])
        opening = kp[:, kpt.INDEX["mouth_bottom"], 1] - kp[:, kpt.INDEX["mouth_top"], 1]
        r = np.corrcoef(env, opening)[0, 1]
        if t["out_of_sync"]:
            assert r < 0.7, (cid, r)
        else:
            assert r > 0.85, (cid, r)


def _hand_mask(frames):
    f = frames.astype(np.float32)
    return (f[..., 1] > 2.0 * f[..., 0]) & (f[..., 1] > 2.0 * f[..., 2]) & (f[..., 1] > 120)


def test_hands_are_where_the_keypoints_say(sset):
    for cid in ("clip_000000", "clip_000001", "clip_000002"):
        frames, _, kp = _clip(sset, cid)
        masks = _hand_mask(frames)
        ys, xs = np.mgrid[:64, :64] + 0.5
        for i in range(0, frames.shape[0], 5):
            mask = masks[i]
            near_any = np.zeros((64, 64), bool)
            for side in ("r_wrist", "l_wrist"):
                x, y, vis = kp[i, kpt.INDEX[side]]
                near = (xs - x) ** 2 + (ys - y) ** 2 < 5.0 ** 2
                near_any |= near
                if vis:
                    blob = mask & near
                    assert blob.sum() >= 8, (cid, i, side)
                    cx, cy = xs[blob].mean(), ys[blob].mean()
                    assert np.hypot(cx - x, cy - y) < 1.0, (cid, i, side, cx, cy, x, y)
            # glove-coloured pixels appear only at (visible or occluded) wrists
            assert (mask & ~near_any).sum() <= 2, (cid, i)


def test_speech_fallback_is_reported(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on this PATH
    cfg = synthetic.SynthConfig(clips=1, seconds=1.0, size=32, speech="auto")
    with caplog.at_level(logging.WARNING):
        truth = synthetic.generate(cfg, str(tmp_path / "fb"), progress=False)
    assert truth["clip_000000"]["speech_engine"] == "syllable"
    assert "espeak-ng not found" in caplog.text
    meta = json.load(open(tmp_path / "fb" / "clips" / "clip_000000.json"))
    assert meta["speech_engine"] == "syllable" and "fallback" in meta["speech_note"]
    wave, _ = media.read_audio(str(tmp_path / "fb" / "clips" / "clip_000000.mp4"), 16000)
    assert np.abs(wave).max() > 0.1  # it speaks
    with pytest.raises(UsageError, match="espeak-ng is not on PATH"):
        synthetic.generate(synthetic.SynthConfig(clips=1, speech="espeak"), str(tmp_path / "x"), progress=False)
    assert not (tmp_path / "x").exists()


def test_cli(tmp_path):
    out = tmp_path / "cli"
    assert synthetic.main(["--out", str(out), "--clips", "1", "--seed", "3", "--size", "32",
                           "--width", "48", "--seconds", "0.6", "--speech", "syllable"]) == 0
    info = media.probe(str(out / "clips" / "clip_000000.mp4"))
    assert (info.width, info.height) == (48, 32)
    assert json.load(open(out / "synth.json"))["seed"] == 3
    assert json.load(open(out / "synth.json"))["framing"] == "full"


def test_cli_framing_is_recorded_and_one_frame_clips_render(tmp_path):
    # 0.04 s at 25 fps is one frame: shorter than any 17-frame window, still a valid clip
    out = tmp_path / "head"
    assert synthetic.main(["--out", str(out), "--clips", "1", "--size", "16", "--seconds", "0.04",
                           "--speech", "syllable", "--framing", "head", "--mouth-scale", "2"]) == 0
    settings = json.load(open(out / "synth.json"))
    assert (settings["framing"], settings["mouth_scale"]) == ("head", 2.0)
    meta = json.load(open(out / "clips" / "clip_000000.json"))
    assert (meta["framing"], meta["mouth_scale"], meta["frames"]) == ("head", 2.0, 1)
    assert meta["camera"]["scale"] == synthetic.FRAMINGS["head"].scale
    assert media.read_video(str(out / "clips" / "clip_000000.mp4")).shape == (1, 16, 16, 3)


# ----------------------------------------------------------------------------- speech crash

def test_syllables_that_start_past_the_buffer_do_not_crash():
    # clip 26 of seed 0 (4 s): a word's third syllable starts 713 samples past the buffer;
    # `seg[: end - pos]` with a negative length raised a broadcast error
    rng = np.random.default_rng([0, 26])
    ident = synthetic.sample_identity(rng)
    wave, said, engine = synthetic.speech(rng, 4.0, "syllable", ident["pitch"], ident["speed"])
    assert wave.shape == (64000,) and engine == "syllable" and said
    assert np.isclose(np.abs(wave).max(), 0.5)
    assert (np.abs(wave[:1600]) == 0).all()  # leading silence kept


def test_full_framing_renders_as_before_framings_existed():
    # golden numbers from the generator before --framing/--mouth-scale and the syllable fix
    # (same rng draws): old seeds must keep rendering the same people, speech and keypoints
    rng = np.random.default_rng([0, 3])
    ident = synthetic.sample_identity(rng)
    wave, said, _ = synthetic.speech(rng, 2.0, "syllable", ident["pitch"], ident["speed"])
    assert said == "Never over we jumps close while city. Music weather music quite travel bright river."
    np.testing.assert_allclose(np.abs(wave).sum(), 1263.306, atol=2e-3)
    opening = synthetic.mouth_opening(wave, 25.0, 50)
    motion = synthetic.body_motion(rng, 50, 25.0, 64, 64, ident, opening)
    np.testing.assert_allclose(motion["kp"][[0, 20, 40], :, :2].sum(1),
                               [[420.452, 493.943], [415.123, 486.140], [415.162, 491.896]], atol=2e-3)
    frames = np.stack([synthetic.render_frame(k, 64, 64, ident, motion, None) for k in (0, 20, 40)])
    np.testing.assert_allclose(frames.reshape(3, -1, 3).mean(1),
                               [[138.973, 147.771, 126.683], [138.689, 147.441, 126.525],
                                [138.938, 147.693, 126.678]], atol=2e-3)


# ----------------------------------------------------------------------------- framing

def _person(index, size, framing="full", mouth_scale=1.0, seconds=2.0, out_of_sync=False, fps=25.0):
    """What render_clip draws for clip (seed 0, index), without the mp4: -> ident, motion, wave."""
    rng = np.random.default_rng([0, index])
    ident = synthetic.sample_identity(rng)
    wave, _, _ = synthetic.speech(rng, seconds, "syllable", ident["pitch"], ident["speed"])
    driver = wave
    if out_of_sync:
        drv_rng = np.random.default_rng([0, index, 1])
        driver, _, _ = synthetic.speech(drv_rng, seconds, "syllable", ident["pitch"], ident["speed"])
    T = int(round(seconds * fps))
    opening = synthetic.mouth_opening(driver, fps, T)
    motion = synthetic.body_motion(rng, T, fps, size, size, ident, opening,
                                   framing=framing, mouth_scale=mouth_scale)
    return ident, motion, wave


def _frames(ident, motion, size, step=1):
    T = motion["kp"].shape[0]
    return np.stack([synthetic.render_frame(i, size, size, ident, motion, None) for i in range(0, T, step)])


@pytest.mark.parametrize("framing", ["half", "head"])
def test_framed_keypoints_are_where_things_are_drawn(framing):
    S = 64
    glove_r = 0.045 * S * synthetic.FRAMINGS[framing].scale
    ys, xs = np.mgrid[:S, :S] + 0.5
    checked = 0
    for index in (0, 1, 2):
        ident, motion, _ = _person(index, S, framing, seconds=1.0)
        kp = motion["kp"][::5]
        frames = _frames(ident, motion, S, step=5)
        masks = _hand_mask(frames)
        dark = sync.luma(frames) < 0.2
        inside = (kp[..., 0] >= 0) & (kp[..., 0] < S) & (kp[..., 1] >= 0) & (kp[..., 1] < S)
        np.testing.assert_array_equal(kp[..., 2] > 0, inside)  # invisible exactly when off-frame
        for i in range(kp.shape[0]):
            near_any = np.zeros((S, S), bool)
            for side in ("r_wrist", "l_wrist"):
                x, y, vis = kp[i, kpt.INDEX[side]]
                d2 = (xs - x) ** 2 + (ys - y) ** 2
                near_any |= d2 < (glove_r + 2) ** 2
                disc = d2 < glove_r ** 2  # the zoomed glove, cut by the frame edge where it leaves
                if vis and disc.sum() >= 8:
                    blob = masks[i] & (d2 < (glove_r + 2) ** 2)
                    # the mask's soft edge costs part of a pixel ring
                    assert 0.6 < blob.sum() / disc.sum() < 1.3, (framing, index, i, side)
                    assert np.hypot(xs[blob].mean() - xs[disc].mean(), ys[blob].mean() - ys[disc].mean()) < 1.0, \
                        (framing, index, i, side)
                    checked += 1
            assert (masks[i] & ~near_any).sum() <= 2, (framing, index, i)
            # the mouth (the only dark shape) is centred between its two keypoints ...
            top, bottom = kp[i, kpt.INDEX["mouth_top"], :2], kp[i, kpt.INDEX["mouth_bottom"], :2]
            assert dark[i].sum() > 0
            assert abs(xs[dark[i]].mean() - top[0]) < 0.5 and abs(ys[dark[i]].mean() - (top[1] + bottom[1]) / 2) < 0.5
            # ... and as tall as they are apart (soft edges lose up to a pixel to the threshold)
            assert -1.5 < dark[i].any(1).sum() - (bottom[1] - top[1]) < 1.0, (framing, index, i)
    assert checked >= 10, checked  # enough hands in view to mean something


def test_the_occluder_is_framed_with_the_body():
    # the board is part of the scene: in a close-up it still covers the right shoulder, and
    # the keypoints it hides are exactly those under its grey pixels
    S = 32
    ident, motion, _ = _person(4, S, "head", seconds=1.0)
    kp = motion["kp"]
    before = kp[..., 2].copy()
    board, covered = synthetic._weaken(np.random.default_rng(0), kp, "occluded", motion["camera"], S, S)
    i = int(np.argmax(covered))
    frame = synthetic.render_frame(i, S, S, ident, motion, board)
    hidden = (before[i] > 0) & (kp[i, :, 2] == 0)
    assert hidden[kpt.INDEX["r_shoulder"]] and not hidden[kpt.INDEX["l_shoulder"]]
    grey = (frame == 128).all(-1)
    for j in np.flatnonzero(hidden):
        x, y = kp[i, j, :2].astype(int)
        assert grey[min(y, S - 1), min(x, S - 1)], kpt.NAMES[j]
    # the full shot's board (x < W/2 - 0.06 H, y > H/2) through the close-up's camera (2x,
    # top at 0.07 H): x < 2 (0.5 - 0.06) S - S/2 = 0.38 S, y > 2 (0.5 - 0.07) S = 0.86 S
    ys, xs = np.mgrid[:S, :S] + 0.5
    expected = (xs < 0.38 * S) & (ys > 0.86 * S)
    assert (grey != expected).sum() <= 0.38 * S + 0.14 * S + 2, (grey.sum(), expected.sum())


def _wrists_visible(motion):
    kp = motion["kp"]
    return (kp[:, kpt.INDEX["r_wrist"], 2] > 0) & (kp[:, kpt.INDEX["l_wrist"], 2] > 0)


def test_framings_zoom_the_mouth_and_keep_hands_in_the_medium_shot():
    heights, both = {}, {}
    for framing in ("full", "half", "head"):
        people = [_person(i, 32, framing, seconds=2.0)[1] for i in range(4)]
        kp = np.concatenate([m["kp"] for m in people])
        heights[framing] = kp[:, kpt.INDEX["mouth_bottom"], 1] - kp[:, kpt.INDEX["mouth_top"], 1]
        both[framing] = np.concatenate([_wrists_visible(m) for m in people]).mean()
    # same people, same mouth motion: the mouth is `scale` times taller on screen
    for framing in ("half", "head"):
        np.testing.assert_allclose(heights[framing], synthetic.FRAMINGS[framing].scale * heights["full"], rtol=1e-5)
    assert both["full"] > 0.95 and both["half"] > 0.9  # hands gesture inside the medium shot
    assert both["head"] < 0.9  # ... and come and go in the close-up


def test_mouth_scale_widens_the_opening_only():
    _, m1, _ = _person(2, 64, "half", mouth_scale=1.0, seconds=1.0)
    _, m2, _ = _person(2, 64, "half", mouth_scale=2.0, seconds=1.0)
    h1, h2 = (m["kp"][:, kpt.INDEX["mouth_bottom"], 1] - m["kp"][:, kpt.INDEX["mouth_top"], 1] for m in (m1, m2))
    closed = 2 * 0.008 * 64 * synthetic.FRAMINGS["half"].scale  # the mouth at rest: unchanged
    np.testing.assert_allclose(h2 - closed, 2 * (h1 - closed), rtol=1e-4, atol=1e-4)
    assert h2.max() > h1.max() + 2.0
    others = [kpt.INDEX[n] for n in kpt.NAMES if n not in ("mouth_top", "mouth_bottom", "chin")]
    np.testing.assert_array_equal(m1["kp"][:, others], m2["kp"][:, others])


@pytest.mark.parametrize("framing,mouth_scale", [("full", 1.0), ("half", 1.0), ("head", 1.0), ("half", 2.0)])
def test_sync_filter_scores_every_framing(framing, mouth_scale):
    # preprocess's audio_ok is sync_score >= min_score on SynthTalk pixels: it must still tell
    # in-sync from out-of-sync mouths once the camera moves in (32 px, the demo's size)
    cfg = sync.SyncConfig()
    for index in range(3):
        for oos in (False, True):
            ident, motion, wave = _person(index, 32, framing, mouth_scale, seconds=2.0, out_of_sync=oos)
            score, _ = sync.sync_score(_frames(ident, motion, 32), wave, synthetic.SAMPLE_RATE, 25.0, cfg)
            if oos:
                assert score < cfg.min_score, (framing, index, score)
            else:
                assert score > max(cfg.min_score, 0.8), (framing, index, score)


# ----------------------------------------------------------------------------- validation

BAD_ARGS = [
    (["--size", "63"], "--size"),
    (["--width", "15"], "--width"),
    (["--seconds", "0"], "--seconds"),
    (["--seconds", "0.01"], "--seconds"),  # a quarter of a frame at 25 fps
    (["--seconds", "nan"], "--seconds"),
    (["--clips", "-2"], "--clips"),
    (["--clips", "three"], "--clips"),
    (["--seed", "-1"], "--seed"),
    (["--out-of-sync", "1.5"], "--out-of-sync"),
    (["--missing", "-0.1"], "--missing"),
    (["--occluded", "0.6", "--missing", "0.6"], "--occluded"),
    (["--fps", "0"], "--fps"),
    (["--fps", "1000"], "--fps"),
    (["--framing", "wide"], "--framing"),
    (["--mouth-scale", "0"], "--mouth-scale"),
    (["--mouth-scale", "3"], "--mouth-scale"),
    (["--speech", "festival"], "--speech"),
]


def _usage_error(capsys, out, args):
    rc = cli.main(["synth", "--out", str(out), *args])
    err = capsys.readouterr().err
    return rc, err


@pytest.mark.parametrize("args,flag", BAD_ARGS, ids=[" ".join(a) for a, _ in BAD_ARGS])
def test_bad_arguments_are_one_line_before_anything_is_written(tmp_path, capsys, args, flag):
    out = tmp_path / "out"
    rc, err = _usage_error(capsys, out, args)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("omnijax synth: "), err
    assert flag in err and "Traceback" not in err
    assert not out.exists()


def test_espeak_without_espeak_ng_and_out_that_is_a_file(tmp_path, capsys, monkeypatch):
    afile = tmp_path / "a_file"
    afile.write_text("")
    rc, err = _usage_error(capsys, afile / "sub", ["--speech", "syllable"])
    assert rc == 2 and "--out" in err and len(err.strip().splitlines()) == 1
    rc, err = _usage_error(capsys, afile, ["--speech", "syllable"])
    assert rc == 2 and "--out" in err and "is a file" in err
    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on this PATH
    out = tmp_path / "out"
    rc, err = _usage_error(capsys, out, ["--speech", "espeak"])
    assert rc == 2 and "--speech espeak" in err and "espeak-ng" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_a_real_process_exits_2_with_one_line(tmp_path):
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "omnijax.cli", "synth", "--out", str(out), "--seconds", "0"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and "--seconds" in p.stderr
    assert p.stdout == "" and not out.exists()
