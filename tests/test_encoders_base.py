"""The weight-free default encoders and frame-rate resampling."""

import numpy as np
import pytest

from omnijax.models.encoders import get_audio_encoder, get_text_encoder, to_video_rate


def test_to_video_rate_pools_dense_features_per_frame():
    rate, fps = 100.0, 25.0
    feats = np.arange(200, dtype=np.float32)[:, None]  # 2 s at 100 Hz
    out = to_video_rate(feats, rate, fps, 50)
    # frame i covers rows 4i .. 4i+3 exactly: their mean.
    np.testing.assert_allclose(out[:, 0], np.arange(50) * 4 + 1.5)


def test_to_video_rate_interpolates_sparse_features_and_pads_past_end():
    feats = np.array([[0.0], [10.0]], np.float32)  # 2 rows at 10 Hz: centres 0.05, 0.15 s
    out = to_video_rate(feats, 10.0, 20.0, 6)
    # frame centres 25, 75, 125 ms ... -> positions -0.25 (clamped), 0.25, 0.75, then past the end
    np.testing.assert_allclose(out[:, 0], [0, 2.5, 7.5, 10, 10, 10])


def test_mel_follows_loudness_and_frame_count():
    sr, fps = 16000, 25.0
    t = np.arange(sr * 2) / sr
    wave = np.sin(2 * np.pi * 220 * t).astype(np.float32)
    wave[sr // 2: sr] *= 0.01  # a quiet stretch from 0.5 s to 1.0 s
    feats = get_audio_encoder("mel")(wave, sr, fps)
    assert feats.shape == (50, 80) and feats.dtype == np.float32
    energy = feats.mean(axis=1)
    assert energy[15:23].max() < energy[2:10].min()  # quiet frames are quieter
    # resampled input gives the same frame count for an explicit num_frames
    assert get_audio_encoder("mel:n_mels=40")(wave, 8000, 30.0, num_frames=7).shape == (7, 40)


def test_mel_rejects_bad_audio():
    with pytest.raises(ValueError, match="mono waveform"):
        get_audio_encoder("mel")(np.zeros((0,), np.float32), 16000, 25.0)


def test_byte_text_encoder_masks_and_is_deterministic():
    enc = get_text_encoder("bytes:dim=32,max_length=8")
    states, mask = enc(["hi", "a longer caption"])
    assert states.shape == (2, 8, 32) and mask.tolist()[0] == [True, True] + [False] * 6
    assert mask[1].all()
    assert np.all(states[0, 2:] == 0)
    again, _ = get_text_encoder("bytes:dim=32,max_length=8")(["hi", "a longer caption"])
    np.testing.assert_array_equal(states, again)
    with pytest.raises(ValueError, match="unknown text encoder"):
        get_text_encoder("nope")


def test_spec_parsing_and_pretrained_encoders_need_a_path():
    from omnijax.models.encoders import _parse

    assert _parse("wav2vec2:/ckpt/w2v:layers=8-12,reduce=mean") == (
        "wav2vec2", "/ckpt/w2v", {"layers": "8-12", "reduce": "mean"})
    assert _parse("t5:gs://bucket/umt5:max_length=512") == ("t5", "gs://bucket/umt5", {"max_length": 512})
    with pytest.raises(ValueError, match="needs a checkpoint directory"):
        get_audio_encoder("wav2vec2")
    with pytest.raises(ValueError, match="needs a checkpoint directory"):
        get_text_encoder("t5")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_text_encoder("t5:/nonexistent/dir")
