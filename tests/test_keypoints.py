"""Keypoints: the agreed order, the sidecar round trip, and heatmaps."""

import json

import numpy as np
import pytest

from omnijax.data import keypoints as kpt


def test_names_and_order_are_the_contract():
    assert kpt.NAMES == ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow",
                         "l_wrist", "r_hip", "l_hip", "mouth_top", "mouth_bottom", "chin")
    assert kpt.NUM_KEYPOINTS == 13 and kpt.INDEX["chin"] == 12


def test_sidecar_round_trip_and_errors(tmp_path):
    kp = np.random.default_rng(0).uniform(0, 60, (5, 13, 3)).astype(np.float32)
    kp[..., 2] = kp[..., 2] > 30
    p = tmp_path / "c.keypoints.json"
    kpt.save_keypoints(p, kp, 25.0)
    back, fps = kpt.load_keypoints(p)
    assert fps == 25.0 and np.abs(back - kp).max() <= 0.005
    assert kpt.sidecar_path("/a/b/c.mp4") == "/a/b/c.keypoints.json"
    with pytest.raises(FileNotFoundError, match="nope.keypoints.json: keypoint sidecar not found"):
        kpt.load_keypoints(tmp_path / "nope.keypoints.json")
    (tmp_path / "bad.keypoints.json").write_text("{")
    with pytest.raises(ValueError, match="bad.keypoints.json: keypoint sidecar is not valid JSON"):
        kpt.load_keypoints(tmp_path / "bad.keypoints.json")
    blob = json.loads(p.read_text())
    blob["names"] = blob["names"][::-1]
    (tmp_path / "order.keypoints.json").write_text(json.dumps(blob))
    with pytest.raises(ValueError, match="order.keypoints.json: keypoint names"):
        kpt.load_keypoints(tmp_path / "order.keypoints.json")
    with pytest.raises(ValueError, match=r"\(T, 13, 3\)"):
        kpt.check_keypoints(np.zeros((5, 12, 3)))


def test_heatmaps_peak_on_visible_keypoints_and_are_zero_elsewhere():
    kp = np.zeros((2, 13, 3), np.float32)
    kp[0, 4] = (10.5, 6.5, 1.0)  # centre of pixel (6, 10)
    kp[1, 4] = (3.0, 3.0, 0.0)  # not visible
    kp[1, 0] = (0.0, 0.0, 1.0)  # on the corner: still a (partial) peak
    hm = kpt.heatmaps(kp, 16, 20, sigma=1.5)
    assert hm.shape == (2, 16, 20, 13) and hm.dtype == np.float32
    assert np.unravel_index(np.argmax(hm[0, ..., 4]), (16, 20)) == (6, 10) and hm[0, 6, 10, 4] == 1.0
    assert not hm[1, ..., 4].any()
    assert hm[1, 0, 0, 0] > 0.8
    # Gaussian falloff with the given sigma
    np.testing.assert_allclose(hm[0, 6, 12, 4], np.exp(-4 / (2 * 1.5**2)), rtol=1e-5)
    assert kpt.visible_fraction(kp) == 2 / 26


def test_heatmaps_in_jax_equal_numpy_and_normalized_keypoints_render_at_any_size():
    """The train step renders cached (normalised) keypoints with jax.numpy; the sampler and
    evaluation render pixel keypoints with numpy: one formula, equal results."""
    import jax.numpy as jnp

    r = np.random.default_rng(0)
    kp = np.concatenate([r.uniform(0, 1, (2, 5, 13, 2)), (r.random((2, 5, 13, 1)) < 0.7)], -1).astype(np.float32)
    want = kpt.heatmaps_from_normalized(kp, 16, 24, 0.04)                      # numpy, batched
    assert want.shape == (2, 5, 16, 24, 13)
    got = np.asarray(kpt.heatmaps_from_normalized(jnp.asarray(kp), 16, 24, 0.04, xp=jnp))
    np.testing.assert_allclose(got, want, atol=1e-6)
    # = pixel keypoints of the 16x24 heatmap through the numpy renderer, one clip at a time
    px = kp * np.asarray([24, 16, 1], np.float32)
    np.testing.assert_allclose(want[1], kpt.heatmaps(px[1], 16, 24, 0.04 * 16), atol=1e-6)
    # normalize() is the inverse of that scaling for a frame of any size
    np.testing.assert_allclose(kpt.normalize(kp * np.asarray([64, 32, 1], np.float32), 32, 64), kp, atol=1e-6)


def test_keypoints_out_of_shot_do_not_count_as_lost():
    """A half-body framing puts the hips below the frame (invisible, positions outside): they
    leave the count. Lost keypoints keep positions inside the frame and count as missing."""
    kp = np.zeros((4, 13, 3), np.float32)
    kp[..., :2] = (8.0, 8.0)
    kp[..., 2] = 1.0
    kp[:, 8:10] = (8.0, 20.0, 0.0)                  # hips below a 16-px frame: out of shot
    assert kpt.visible_fraction(kp) == 11 / 13     # without the frame size they count
    assert kpt.visible_fraction(kp, 16, 16) == 1.0
    kp[1:, :, 2] = 0.0                             # a detector lost the person for 3 frames
    assert kpt.visible_fraction(kp, 16, 16) == pytest.approx(11 / (4 * 11))   # hips stay out of shot
    kp[:, 4] = (0.0, 0.0, 0.0)                      # a detector's (0, 0) is in frame: lost
    assert kpt.visible_fraction(kp, 16, 16) == pytest.approx(10 / (4 * 11))
    assert kpt.visible_fraction(np.zeros((0, 13, 3)), 16, 16) == 0.0
