"""Curriculum stages: the paper's ordering principles and dropout ratios that match config."""

import numpy as np
import pytest

from omnijax.data import curriculum as cur


def test_default_stages_follow_the_two_principles():
    s1, s2, s3 = (cur.STAGES[i] for i in (1, 2, 3))
    # stage 1 text + reference only; stage 2 adds audio; stage 3 adds pose
    assert s1.audio == 0 and s1.pose == 0 and s1.text > 0 and s1.ref > 0
    assert s2.audio > 0 and s2.pose == 0
    assert s3.audio > 0 and s3.pose > 0
    # the stronger the condition, the lower (or equal) its ratio; final stage 0.5 / 0.5
    for s in (s2, s3):
        assert s.ref >= s.audio >= s.pose and s.text >= s.audio
    assert (s3.audio, s3.pose) == (0.5, 0.5)
    assert s3.ref >= 0.8 and s3.text >= 0.8  # low reference ratio causes long-video drift


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_keep_ratios_match_config_over_many_samples(stage):
    st = cur.get_stage(stage)
    n = 20000
    ok = np.ones(n, bool)
    m = cur.keep_masks(st, ok, ok, np.random.default_rng(stage))
    for c, ratio in st.ratios().items():
        got = m[f"keep_{c}"].mean()
        tol = 4 * np.sqrt(max(ratio * (1 - ratio), 1e-12) / n) + 1e-9
        assert abs(got - ratio) <= tol, (c, got, ratio)
        assert m[f"keep_{c}"].shape == (n,) and m[f"keep_{c}"].dtype == bool


def test_failed_filters_force_their_condition_dropped_but_keep_the_rest():
    st = cur.get_stage(3, {"audio": 1.0, "pose": 1.0, "ref": 1.0, "text": 1.0})
    audio_ok = np.array([True, False, True, False])
    pose_ok = np.array([True, True, False, False])
    m = cur.keep_masks(st, audio_ok, pose_ok, np.random.default_rng(0))
    np.testing.assert_array_equal(m["keep_audio"], audio_ok)
    np.testing.assert_array_equal(m["keep_pose"], pose_ok)
    assert m["keep_ref"].all() and m["keep_text"].all()  # weak samples still train weaker tasks


def test_overrides_and_errors():
    assert cur.get_stage("2", {"audio": 0.3}).audio == 0.3
    assert cur.get_stage("stage3_pose").pose == 0.5
    with pytest.raises(ValueError, match="keep ratio"):
        cur.Stage("bad", audio=1.5)
    with pytest.raises(ValueError, match="unknown stage fields"):
        cur.get_stage(1, {"motion": 0.5})
    with pytest.raises(ValueError, match="unknown stage"):
        cur.get_stage(7)
    with pytest.raises(ValueError, match=r"\(B,\)"):
        cur.keep_masks(cur.STAGES[1], np.ones(3, bool), np.ones(4, bool), np.random.default_rng(0))


def test_keep_masks_is_a_pure_function_of_the_rng():
    st = cur.STAGES[3]
    ok = np.ones(64, bool)
    a = cur.keep_masks(st, ok, ok, np.random.default_rng(5))
    b = cur.keep_masks(st, ok, ok, np.random.default_rng(5))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_stage_ratios_are_one_per_model_condition():
    # the curriculum speaks the model's vocabulary, in its order (mix codes and draw order)
    from omnijax.models.conditions import CONDITIONS
    assert cur.CONDITIONS is CONDITIONS
    assert tuple(f.name for f in __import__("dataclasses").fields(cur.Stage))[1:] == CONDITIONS
    assert tuple(cur.STAGES[3].ratios()) == CONDITIONS
