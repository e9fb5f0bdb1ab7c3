"""Identity drift and seams move the right way on constructed chained videos: a colour
drifting linearly over segments gives a rising curve (in the region that drifts), a
constant one a flat curve (also blurred and swaying), another identity is far; a video
cut from one continuous clip has invisible seams, one with jumps at the cuts does not.
Each holds in the full, half and head framings."""

import numpy as np
import pytest

from omnijax.eval import appearance as ap
from omnijax.eval import constructed as cx

SEG, NSEG = 12, 4
STARTS = list(range(0, SEG * NSEG, SEG))
REGION_OF = {"shirt_rgb": "shirt", "bg_rgb": "background", "hair_rgb": "hair", "skin_rgb": "skin"}
FRAMINGS = ("full", "half", "head")


def _chained(seed=0, size=64, key=None, step=0.0, **kw):
    """A 'chained' video of NSEG segments; `key`'s colour moves by `step` per segment."""
    base = cx.render(seed, size, 0.04)["identity"]

    def colours(i):
        if key is None:
            return {}
        return {key: tuple(float(np.clip(c + step * (i // SEG), 0, 255)) for c in base[key])}
    return cx.render(seed, size, SEG * NSEG / 25.0, colours=colours, **kw)["frames"]


@pytest.fixture(scope="module")
def others():
    """framing -> other people's reference images in that framing."""
    refs = {}

    def get(framing):
        if framing not in refs:
            refs[framing] = [cx.render(s, 64, 0.04, framing=framing)["frames"][0] for s in range(100, 106)]
        return refs[framing]
    return get


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("key", sorted(REGION_OF))
def test_linear_colour_drift_gives_a_rising_curve(key, framing):
    frames = _chained(key=key, step=-12.0, framing=framing)
    curve = ap.drift_curve(frames, frames[0], STARTS)
    assert all(b - a > 0.4 for a, b in zip(curve, curve[1:])), curve
    assert curve[-1] - curve[0] > 2.5, curve
    last = ap.appearance_distances(ap.appearance(frames[STARTS[-1]:], frames[0]), ap.appearance(frames[:1]))
    assert max(last, key=last.get) == REGION_OF[key], last  # the drift is seen where it happens


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("variant", ["sharp", "blurred", "sway", "32px"])
def test_constant_colours_give_a_flat_curve_far_below_another_identity(variant, framing, others):
    size = 32 if variant == "32px" else 64
    frames = _chained(size=size, edit=cx.sway(2.0) if variant == "sway" else None, framing=framing)
    ref = frames[0]
    if variant == "blurred":
        frames = cx.blur(frames, 1.5)  # the reference stays sharp, as a reference photo is
    curve = np.array(ap.drift_curve(frames, ref, STARTS))
    assert np.ptp(curve) < 1.0 and curve.max() < (2.0 if variant == "blurred" else 1.0), curve
    if size == 64:
        far = ap.other_identity_distance(ref, others(framing))
        assert far > 15.0 and far > 5 * curve.max(), (far, curve)


def test_appearance_distance_is_a_distance():
    a = ap.appearance(cx.render(0, 64, 0.04)["frames"])
    b = ap.appearance(cx.render(1, 64, 0.04)["frames"])
    assert ap.appearance_distance(a, a) == 0.0
    d = ap.appearance_distance(a, b)
    assert d == pytest.approx(ap.appearance_distance(b, a)) and d > 5
    assert set(ap.appearance_distances(a, b)) == set(ap.REGIONS)
    with pytest.raises(ValueError, match="segment_starts"):
        ap.drift_curve(np.zeros((10, 64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8), [2, 5])


def test_srgb_to_lab_reference_values():
    lab = ap.srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0]]))
    np.testing.assert_allclose(lab, [[100, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20]], atol=0.05)


# ----------------------------------------------------------------------------- seams

BOUNDS = STARTS[1:]


@pytest.mark.parametrize("framing", FRAMINGS)
def test_cuts_in_one_continuous_clip_are_invisible(framing):
    frames = _chained(framing=framing)
    r = ap.seam_stats(frames, BOUNDS)
    assert 0.6 < r["ratio"] < 1.5 and r["inside"] > 0, r


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("jump", ["pose", "colour"])
def test_jumps_at_the_cuts_are_seen(jump, framing):
    if jump == "pose":  # each segment from other gestures and sway of the same person
        clips = [_chained(motion_seed=s, framing=framing) for s in range(NSEG)]
        frames = np.concatenate([c[a:a + SEG] for c, a in zip(clips, STARTS)])
    else:  # the background colour changes at each cut
        frames = _chained(key="bg_rgb", step=-10.0, framing=framing)
    assert ap.seam_ratio(frames, BOUNDS) > 3.0


def test_frozen_video_seams():
    still = np.repeat(_chained()[:1], SEG * NSEG, axis=0)
    assert ap.seam_stats(still, BOUNDS) == {"seam": 0.0, "inside": 0.0, "ratio": 1.0}
    jumped = still.copy()
    jumped[SEG:] //= 2
    assert ap.seam_ratio(jumped, [SEG]) == float("inf")
    with pytest.raises(ValueError, match="boundaries"):
        ap.seam_ratio(still, [0])
