"""The pixel-based sync filter: separates in-sync from out-of-sync SynthTalk clips, and its
parts move the right way on constructed input."""

import json
import os

import numpy as np
import pytest

from data_helpers import synth_set
from omnijax.data import media, sync


@pytest.fixture(scope="module")
def sync_set(tmp_path_factory):
    return synth_set(tmp_path_factory.getbasetemp(), "synth_sync", clips=24, seed=11,
                     out_of_sync=0.4, occluded=0.1, missing=0.0)


def test_filter_separates_in_sync_from_out_of_sync_clips(sync_set):
    truth = json.load(open(os.path.join(sync_set, "truth.json")))
    cfg = sync.SyncConfig()
    passed, in_sync = [], []
    for cid, t in sorted(truth.items()):
        path = os.path.join(sync_set, "clips", cid + ".mp4")
        frames = media.read_video(path, 25.0)
        wave, sr = media.read_audio(path, 16000)
        score, _ = sync.sync_score(frames, wave, sr, 25.0, cfg)  # pixels + audio only
        passed.append(score >= cfg.min_score)
        in_sync.append(not t["out_of_sync"])
    passed, in_sync = np.array(passed), np.array(in_sync)
    assert in_sync.sum() >= 12 and (~in_sync).sum() >= 8
    tp = (passed & in_sync).sum()
    precision, recall = tp / max(passed.sum(), 1), tp / in_sync.sum()
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)


def test_lagged_correlation_finds_the_shift():
    rng = np.random.default_rng(0)
    a = np.convolve(rng.standard_normal(200), np.ones(3) / 3, mode="same")
    b = np.roll(a, 2)  # b trails a by 2 frames
    score, lag = sync.lagged_correlation(a, b, max_lag=3)
    assert lag == 2 and score > 0.99
    assert sync.lagged_correlation(a, b, max_lag=1)[0] < score
    assert sync.lagged_correlation(a, np.ones(200), max_lag=2) == (0.0, -2)  # still mouth: no score
    unrelated = np.convolve(rng.standard_normal(200), np.ones(3) / 3, mode="same")
    assert sync.lagged_correlation(a, unrelated, max_lag=1)[0] < 0.3


def test_mouth_signal_grows_with_a_dark_opening_and_ignores_light_motion():
    frames = np.full((4, 32, 32, 3), 180, np.uint8)
    frames[1, 10:12, 10:16] = (70, 15, 25)  # small open mouth
    frames[2, 10:14, 10:16] = (70, 15, 25)  # wider open
    frames[3, 20:30, 0:10] = (30, 230, 60)  # a hand moving in: not dark
    s = sync.mouth_signal(frames)
    assert s[0] == 0 and 0 < s[1] < s[2] and s[3] == 0


def test_envelope_and_score_on_constructed_audio():
    sr, fps, n = 16000, 25.0, 50
    env_true = (np.sin(np.arange(n) / 3.0) > 0).astype(float)
    wave = np.concatenate([np.full(sr // 25, v) * np.sin(np.arange(sr // 25)) for v in env_true]).astype(np.float32)
    env = sync.loudness_envelope(wave, sr, fps, n)
    assert np.corrcoef(env, env_true)[0, 1] > 0.99
    frames = np.full((n, 16, 16, 3), 200, np.uint8)
    for i, v in enumerate(env_true):
        if v:
            frames[i, 6:9, 5:11] = (60, 10, 20)
    assert sync.sync_score(frames, wave, sr, fps)[0] > 0.95
    shifted = np.roll(frames, 7, axis=0)  # mouth a quarter second late: out of sync
    assert sync.sync_score(shifted, wave, sr, fps)[0] < 0.5
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        sync.sync_score(frames[..., 0], wave, sr, fps)
