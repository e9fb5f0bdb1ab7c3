"""SynthTalk: deterministic per seed, on-disk layout of real data, and ground truth that the
pixels and audio agree with (mouth follows loudness, hands are where the keypoints say)."""

import json
import logging
import os

import numpy as np
import pytest

from data_helpers import synth_set
from omnijax.data import keypoints as kpt
from omnijax.data import media, synthetic
from omnijax.data.sync import loudness_envelope


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
    with pytest.raises(RuntimeError, match="espeak-ng is not on PATH"):
        synthetic.generate(synthetic.SynthConfig(clips=1, speech="espeak"), str(tmp_path / "x"), progress=False)


def test_cli(tmp_path):
    out = tmp_path / "cli"
    assert synthetic.main(["--out", str(out), "--clips", "1", "--seed", "3", "--size", "32",
                           "--width", "48", "--seconds", "0.6", "--speech", "syllable"]) == 0
    info = media.probe(str(out / "clips" / "clip_000000.mp4"))
    assert (info.width, info.height) == (48, 32)
    assert json.load(open(out / "synth.json"))["seed"] == 3
