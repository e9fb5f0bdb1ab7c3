"""Condition projectors: frame grouping, audio windows (content and mask), pose guider, text null."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omnijax.models import conditions as cond


def test_latent_frames_and_grouping():
    assert [cond.latent_frames(t) for t in (1, 5, 9, 21)] == [1, 2, 3, 6]
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        cond.latent_frames(8)
    x = np.arange(1, 10, dtype=np.float32)[None, :, None]          # video frames 1..9 -> F = 3
    g = np.asarray(cond.group_by_latent_frame(jnp.asarray(x)))[0, ..., 0]
    np.testing.assert_array_equal(g, [[0, 0, 0, 1], [2, 3, 4, 5], [6, 7, 8, 9]])


def test_audio_window_mask():
    m = cond.audio_window_mask(3, 1)                                 # S = 12 slots per frame
    assert m.shape == (3, 12)
    # frame 0: left neighbour out of range (4 slots), own group has 3 pads + frame 0, right full
    np.testing.assert_array_equal(m[0], [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(m[1], [0, 0, 0, 1] + [1] * 8)
    np.testing.assert_array_equal(m[2], [1] * 8 + [0] * 4)
    np.testing.assert_array_equal(cond.audio_window_mask(2, 0), [[0, 0, 0, 1], [1, 1, 1, 1]])


def test_audio_tokens_hold_the_right_frames():
    proj = cond.AudioProjector(audio_dim=4, hidden=8, width=8, window=1, rngs=nnx.Rngs(0))
    t = 9
    audio = np.random.default_rng(0).normal(size=(1, t, 4)).astype(np.float32)
    tokens, mask = proj(jnp.asarray(audio), np.array([True]))
    assert tokens.shape == (1, 3, 12, 8) and mask.shape == (1, 3, 12)
    feats = np.asarray(proj.fc2(nnx.gelu(proj.fc1(jnp.asarray(audio)), approximate=True)))[0]   # (T, W)
    slot = np.asarray(proj.slot_embed[...])
    tok = np.asarray(tokens)[0] - slot[None]
    # latent frame 1 (video frames 1..4): left window = frame 0's group, own = 1..4, right = 5..8
    np.testing.assert_allclose(tok[1, 3], feats[0], atol=1e-5)
    np.testing.assert_allclose(tok[1, 4:8], feats[1:5], atol=1e-5)
    np.testing.assert_allclose(tok[1, 8:12], feats[5:9], atol=1e-5)
    np.testing.assert_allclose(tok[0, 7], feats[0], atol=1e-5)
    # dropped audio: the learned null table, every slot valid
    tokens, mask = proj(jnp.asarray(audio), np.array([False]))
    np.testing.assert_allclose(np.asarray(tokens)[0], np.broadcast_to(np.asarray(proj.null[...]), (3, 12, 8)))
    assert bool(np.all(np.asarray(mask)))


def test_pose_guider_reaches_the_latent_grid_and_sees_adjacent_frames():
    guider = cond.PoseGuider(keypoints=13, hidden=8, out_channels=4, pose_scale=0.5, rngs=nnx.Rngs(0))
    guider.out.kernel[...] = np.random.default_rng(1).normal(size=guider.out.kernel.shape).astype(np.float32)
    pose = np.random.default_rng(2).uniform(size=(2, 5, 16, 24, 13)).astype(np.float32)   # F = 2, h, w = 4, 6
    out = np.asarray(guider(jnp.asarray(pose), np.array([True, False])))
    assert out.shape == (2, 2, 4, 6, 4)
    np.testing.assert_array_equal(out[1], 0.0)                      # dropped pose is zeros
    # changing video frame 3 (latent frame 1) changes latent frame 1 only
    moved = pose.copy()
    moved[:, 3] = 1.0 - moved[:, 3]
    out2 = np.asarray(guider(jnp.asarray(moved), np.array([True, True])))
    ref = np.asarray(guider(jnp.asarray(pose), np.array([True, True])))
    np.testing.assert_allclose(out2[:, 0], ref[:, 0], atol=1e-6)
    assert np.abs(out2[:, 1] - ref[:, 1]).max() > 1e-4
    with pytest.raises(ValueError, match="power of two"):
        cond.PoseGuider(keypoints=13, hidden=8, out_channels=4, pose_scale=0.3, rngs=nnx.Rngs(0))


def test_pose_guider_ignores_the_channels_it_is_told_to():
    """pose_ignore channels are never seen: changing them changes nothing; others do."""
    r = np.random.default_rng(3)
    guider = cond.PoseGuider(keypoints=13, hidden=8, out_channels=4, pose_scale=0.5, ignore=(10, 11, 12),
                             rngs=nnx.Rngs(0))
    guider.out.kernel[...] = r.normal(size=guider.out.kernel.shape).astype(np.float32)
    pose = r.uniform(size=(1, 5, 16, 16, 13)).astype(np.float32)
    keep = np.array([True])
    ref = np.asarray(guider(jnp.asarray(pose), keep))
    mouth = pose.copy()
    mouth[..., 10:] = r.uniform(size=mouth[..., 10:].shape)
    np.testing.assert_array_equal(np.asarray(guider(jnp.asarray(mouth), keep)), ref)
    hand = pose.copy()
    hand[..., 4] = 0.0
    assert np.abs(np.asarray(guider(jnp.asarray(hand), keep)) - ref).max() > 1e-4


def test_text_projector_null():
    proj = cond.TextProjector(text_dim=6, width=8, rngs=nnx.Rngs(0))
    text = jnp.ones((2, 5, 6))
    mask = np.ones((2, 5), bool)
    tokens, m = proj(text, mask, np.array([True, False]))
    np.testing.assert_array_equal(np.asarray(m)[1], [True, False, False, False, False])
    np.testing.assert_allclose(np.asarray(tokens)[1, 0], np.asarray(proj.null[...])[0])
    null, null_mask = proj.null_tokens(2, jnp.float32)
    assert null.shape == (2, 1, 8) and bool(np.all(np.asarray(null_mask)))


def test_timestep_embedding_distinguishes_times():
    e = np.asarray(cond.timestep_embedding(jnp.array([0.0, 0.5, 1.0]), 32))
    assert e.shape == (3, 32)
    assert np.abs(e[0] - e[1]).max() > 0.1 and np.abs(e[1] - e[2]).max() > 0.1
