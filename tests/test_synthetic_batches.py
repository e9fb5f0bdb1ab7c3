"""The in-memory batch sources: deterministic per (seed, index), resumable, valid values."""

import numpy as np

from omnijax.data import curriculum, synthetic_batches as sb


def _make(seed=0, stage=3):
    return sb.synthetic_latents(seed=seed, batch=4, frames=3, height=4, width=4, channels=2,
                                audio_dim=5, keypoints=13, text_len=6, text_dim=3,
                                stage=curriculum.get_stage(stage))


def test_synthetic_latents_shapes_dtypes_and_ranges():
    b = _make()(0)
    assert b["latents"].shape == (4, 3, 4, 4, 2) and b["latents"].dtype == np.float32
    assert b["audio"].shape == (4, 9, 5)                      # T = 1 + 4 (F - 1)
    kp = b["keypoints"]
    assert kp.shape == (4, 9, 13, 3) and kp.dtype == np.float32
    assert kp[..., :2].min() >= 0.0 and kp[..., :2].max() < 1.0   # fractions of the frame
    assert set(np.unique(kp[..., 2])) == {0.0, 1.0}
    assert 0.8 < kp[..., 2].mean() < 1.0
    assert b["text_mask"].dtype == bool and b["text_mask"][:, 0].all()
    for k in ("keep_ref", "keep_text", "keep_audio", "keep_pose"):
        assert b[k].shape == (4,) and b[k].dtype == bool
    # a condition whose data is unusable is never kept
    assert not (b["keep_audio"] & ~b["audio_ok"]).any()
    assert not (b["keep_pose"] & ~b["pose_ok"]).any()


def test_synthetic_latents_deterministic_in_seed_and_index():
    a, b = _make(0)(3), _make(0)(3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert not np.array_equal(_make(0)(4)["keypoints"], a["keypoints"])
    assert not np.array_equal(_make(1)(3)["latents"], a["latents"])


def test_indexed_batches_resume_and_rows():
    make = _make()
    it = sb.IndexedBatches(make, (1, 3))
    first = [next(it) for _ in range(3)]
    assert first[0]["latents"].shape[0] == 2
    np.testing.assert_array_equal(first[2]["keypoints"], make(2)["keypoints"][1:3])
    state = it.get_state()
    after = next(it)
    it2 = sb.IndexedBatches(make, (1, 3))
    it2.set_state(state)
    np.testing.assert_array_equal(next(it2)["latents"], after["latents"])


def test_indexed_batches_injects_nan_where_asked():
    it = sb.IndexedBatches(_make(), (0, 4), nan_at=(1,), nan_key="latents")
    assert np.isfinite(next(it)["latents"]).all()
    assert np.isnan(next(it)["latents"]).all()
