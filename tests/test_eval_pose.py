"""Hands found from pixels move the right way: gloves re-drawn k px away from the driving
wrists read k px, the truth reads ~0, a still frame under moving keypoints reads large;
blur (as a VAE decoder leaves it) does not move the centres. In the full and half
framings the hands are always in frame; in the head close-up they come and go at the
bottom edge, cut by it, and are measured in the frames whose wrists are visible."""

import numpy as np
import pytest

from omnijax.data import keypoints as kpt
from omnijax.eval import constructed as cx
from omnijax.eval import pose

@pytest.fixture(scope="module")
def clip_of():
    """framing -> the 2 s, 64 px clip of seed 0 seen in that framing (rendered once)."""
    clips = {}

    def get(framing):
        if framing not in clips:
            clips[framing] = cx.render(0, 64, 2.0, framing=framing)
        return clips[framing]
    return get


@pytest.mark.parametrize("framing", ["full", "half"])
@pytest.mark.parametrize("k", [0.0, 3.0, 6.0])
@pytest.mark.parametrize("sigma", [0.0, 1.5])
def test_hands_moved_by_k_px_read_k_px(clip_of, framing, k, sigma):
    # the same clip, gloves (and forearms) drawn with the wrists k px away along (0.6, 0.8)
    truth = clip_of(framing)
    moved = truth if k == 0 else cx.render(0, 64, 2.0, framing=framing, edit=cx.move_wrists(0.6 * k, 0.8 * k))
    frames = cx.blur(moved["frames"], sigma) if sigma else moved["frames"]
    r = pose.pose_error(frames, truth["motion"]["kp"])
    assert abs(r["error_px"] - k) < (0.3 if k == 0 else 1.0), r
    assert r["found"] > 0.9 and r["visible"] == 2 * len(frames), r


@pytest.mark.parametrize("k", [0.0, 3.0])
@pytest.mark.parametrize("sigma", [0.0, 1.5])
def test_hands_cut_by_the_frame_edge_read_k_px(clip_of, k, sigma):
    # head close-up: the gloves are cut by the bottom (and side) edges; only the wrists
    # inside the frame both before and after the move are asked for
    truth = clip_of("head")
    moved = truth if k == 0 else cx.render(0, 64, 2.0, framing="head", edit=cx.move_wrists(0.6 * k, 0.8 * k))
    kp = truth["motion"]["kp"].copy()
    w = moved["motion"]["kp"][:, list(pose.WRISTS), :2]
    kp[:, list(pose.WRISTS), 2] *= ((w >= 0) & (w < 64)).all(-1)
    frames = cx.blur(moved["frames"], sigma) if sigma else moved["frames"]
    r = pose.pose_error(frames, kp)
    assert r["visible"] >= 30 and r["found"] > 0.9, r
    assert abs(r["error_px"] - k) < (0.3 if sigma == 0 else 0.75), r  # blur leaks a rim past the edge


@pytest.mark.parametrize("framing", ["full", "half"])
def test_still_frame_under_moving_keypoints_reads_large(clip_of, framing):
    truth = clip_of(framing)
    still = np.repeat(truth["frames"][:1], len(truth["frames"]), axis=0)
    kp = truth["motion"]["kp"]
    r = pose.pose_error(still, kp)
    travel = np.linalg.norm(kp[:, [4, 7], :2] - kp[:1, [4, 7], :2], axis=-1).mean()
    assert r["error_px"] > 2.0 and r["error_px"] > 20 * pose.pose_error_px(truth["frames"], kp)
    assert abs(r["error_px"] - travel) < 1.0  # it is how far the wrists travelled


@pytest.mark.parametrize("framing", ["full", "half"])
def test_hand_positions_track_each_wrist_at_32_px(framing):
    clip = cx.render(3, 32, 1.0, framing=framing)
    hands = pose.hand_positions(cx.blur(clip["frames"], 0.75))
    wrists = clip["motion"]["kp"][:, list(pose.WRISTS), :2]
    assert hands.shape == (25, 2, 2) and np.isfinite(hands).all()
    assert np.abs(hands - wrists).max() < 0.75  # right hand in slot 0, left in slot 1


def test_a_cut_glove_is_placed_at_its_centre_not_its_centroid(clip_of):
    clip = clip_of("head")
    wr = clip["motion"]["kp"][:, list(pose.WRISTS)]
    cut = (wr[..., 2] > 0) & (np.minimum(64 - wr[..., 1], np.minimum(wr[..., 0], 64 - wr[..., 0])) < 3.0)
    assert cut.sum() >= 20  # wrists within 3 px of an edge: most of the glove's disc is cut
    hands = pose.hand_positions(clip["frames"])
    err = np.stack([pose._match(hands[t], np.where(wr[t, :, 2:] > 0, wr[t, :, :2], np.nan)) for t in range(len(wr))])
    assert np.nanmax(err[cut]) < 0.6, err[cut]


def test_missing_and_invisible_hands():
    clip = cx.render(0, 64, 0.4)
    frames = clip["frames"].copy()
    kp = clip["motion"]["kp"].copy()
    g = pose.green_dominance(frames)
    frames[:5][g[:5] > 0.1] = (128, 128, 128)  # hands painted out of the first 5 frames
    hands = pose.hand_positions(frames)
    assert np.isnan(hands[:5]).all() and np.isfinite(hands[5:]).all()
    kp[5:, kpt.INDEX["l_wrist"], 2] = 0.0  # left wrist not visible in the rest
    r = pose.pose_error(frames, kp)
    assert r["visible"] == 2 * 10 - 5 and r["found"] == pytest.approx(5 / 15) and r["error_px"] < 0.3
    none = pose.pose_error(np.full_like(frames, 200), kp)
    assert none["found"] == 0.0 and np.isnan(none["error_px"])


def test_pose_error_checks_shapes(clip_of):
    truth = clip_of("full")
    with pytest.raises(ValueError, match="same T"):
        pose.pose_error(truth["frames"][:10], truth["motion"]["kp"])
    with pytest.raises(ValueError, match=r"\(T, 13, 3\)"):
        pose.pose_error(truth["frames"], truth["motion"]["kp"][:, :5])
