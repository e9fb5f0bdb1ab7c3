"""Lip-sync from pixels moves the right way on constructed SynthTalk clips:
in sync > audio shifted by 0.5 s > unrelated audio > still frame, sharp, blurred (as a VAE
decoder leaves it) and with extra head sway, at 64 and 32 px, in the full, half and head
framings and with the mouth opening up to twice as far; a k-frame delay reads k; the face
and its mouth are found where the renderer drew them, whatever the framing."""

import numpy as np
import pytest

from omnijax.data.synthetic import SAMPLE_RATE
from omnijax.eval import constructed as cx
from omnijax.eval import lipsync as ls

FRAMINGS = ("full", "half", "head")


@pytest.fixture(scope="module")
def other_wave():
    return cx.render(101, 32, 4.0)["wave"]  # someone else's speech, as long


def _cases(frames, wave, other_wave):
    shifted = np.concatenate([np.zeros(SAMPLE_RATE // 2, np.float32), wave])[:wave.size]  # audio 0.5 s late
    still = np.repeat(frames[:1], len(frames), axis=0)
    return {name: ls.lipsync(f, w, SAMPLE_RATE, 25.0, ref=frames[0]) for name, (f, w) in {
        "truth": (frames, wave), "shifted": (frames, shifted), "unrelated": (frames, other_wave),
        "still": (still, wave)}.items()}


@pytest.mark.parametrize("framing,mouth_scale,size,variant", [
    ("full", 1.0, 64, "sharp"), ("full", 1.0, 64, "blurred"), ("full", 1.0, 64, "sway+blurred"),
    ("full", 1.0, 32, "blurred"), ("full", 2.0, 64, "blurred"),
    ("half", 1.0, 64, "blurred"), ("half", 2.0, 64, "blurred"), ("half", 2.0, 64, "sway+blurred"),
    ("half", 2.0, 32, "blurred"),  # the demo's shot, at the quick tests' size
    ("head", 2.0, 64, "blurred"), ("head", 2.0, 32, "blurred")])
def test_in_sync_beats_shifted_beats_unrelated_beats_still(framing, mouth_scale, size, variant, other_wave):
    clip = cx.render(1, size, 4.0, framing=framing, mouth_scale=mouth_scale,
                     edit=cx.sway(2.0 * size / 64) if "sway" in variant else None)
    frames = clip["frames"]
    if "blurred" in variant:
        frames = cx.blur(frames, 1.5 * size / 64)  # sigma 1.5 px at 64 px
    r = _cases(frames, clip["wave"], other_wave)
    peaks = [r[k]["peak"] for k in ("truth", "shifted", "unrelated", "still")]
    assert peaks[0] > peaks[1] > peaks[2] > peaks[3], r
    assert r["truth"]["peak"] > 0.9 and r["truth"]["offset"] == 0, r
    # 0.5 s = 12.5 frames: found at the edge of the +-12 search, audio trailing the mouth
    assert r["shifted"]["offset"] == -12, r
    assert r["unrelated"]["peak"] < 0.6 and r["still"] == {"peak": 0.0, "offset": 0, "confidence": 0.0}, r
    assert r["truth"]["confidence"] > 2 * r["unrelated"]["confidence"], r


@pytest.mark.parametrize("framing,k", [("full", -4), ("full", 3), ("full", 7), ("half", 5), ("head", -3)])
def test_offset_of_a_delayed_mouth_reads_the_delay(framing, k):
    clip = cx.render(2, 64, 4.0, delay=k, framing=framing, mouth_scale=1.0 if framing == "full" else 2.0)
    r = ls.lipsync(cx.blur(clip["frames"], 1.5), clip["wave"], SAMPLE_RATE, 25.0)  # mouth k frames late
    assert r["offset"] == k and r["peak"] > 0.9, r


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("size,sigma", [(64, 0.0), (64, 1.5), (32, 0.75)])
def test_mouth_box_is_centred_on_the_mouth(framing, size, sigma):
    for seed in range(8):  # skins, hair (long or not), face shapes and backgrounds vary with the seed
        clip = cx.render(seed, size, 0.04, framing=framing, mouth_scale=2.0)
        frame = cx.blur(clip["frames"], sigma)[0] if sigma else clip["frames"][0]
        true = cx.face_truth(clip)
        y0, y1, x0, x1 = ls.mouth_box(frame)
        assert abs((y0 + y1) / 2 - true["mouth"]) <= 1.0 and abs((x0 + x1) / 2 - true["axis"]) <= 1.0, seed
        # room for the mouth as far as it opens (down to the chin) and as wide as it is
        assert (y1 - y0) / 2 >= 0.45 * true["ry"] - 0.5 and (x1 - x0) / 2 >= 0.38 * true["rx"] - 0.5, seed


@pytest.mark.parametrize("framing", FRAMINGS)
def test_face_geometry_measures_the_face(framing):
    for seed in range(8):
        clip = cx.render(seed, 64, 0.04, framing=framing)
        face, true = ls.face_geometry(cx.blur(clip["frames"], 1.5)[0]), cx.face_truth(clip)
        assert abs(face.axis - true["axis"]) < 0.5 and abs(face.mouth - true["mouth"]) < 0.5, (seed, face, true)
        assert abs(face.centre - true["centre"]) < 0.15 * true["ry"] + 0.5, (seed, face, true)
        assert 0.85 < face.ry / true["ry"] < 1.15, (seed, face, true)  # the size every length is made from


@pytest.mark.parametrize("framing,size", [("full", 64), ("half", 32), ("head", 64)])
def test_mouth_is_found_in_a_wide_open_reference(framing, size):
    clip = cx.render(5, size, 1.0, framing=framing, mouth_scale=2.0)
    i = int(np.argmax(clip["motion"]["mouth_half_h"]))  # the mouth as far open as it gets
    true = cx.face_truth(clip, i)
    assert true["mouth_half_h"] > 0.3 * true["ry"]
    y0, y1, x0, x1 = ls.mouth_box(clip["frames"][i])
    assert abs((y0 + y1) / 2 - true["mouth"]) <= 1.0 and abs((x0 + x1) / 2 - true["axis"]) <= 1.0


@pytest.mark.parametrize("framing", FRAMINGS)
def test_head_shifts_follow_the_sway(framing):
    clip = cx.render(4, 64, 1.0, framing=framing, edit=cx.sway(2.0))
    true = np.stack([clip["motion"]["hy"], clip["motion"]["hx"]], 1)
    got = ls.head_shifts(clip["frames"], clip["frames"][0])
    assert np.abs(got - (true - true[0])).max() < 0.5


def test_lipsync_refuses_what_it_cannot_measure():
    flat = np.full((30, 64, 64, 3), 128, np.uint8)
    wave = np.zeros(16000, np.float32)
    with pytest.raises(ValueError, match="no mouth found"):
        ls.lipsync(flat, wave, SAMPLE_RATE)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        ls.lipsync(flat[..., 0], wave, SAMPLE_RATE)
    with pytest.raises(ValueError, match="max_lag"):
        ls.lipsync(flat[:10], wave, SAMPLE_RATE, max_lag=12)
    with pytest.raises(ValueError, match="mono"):
        ls.lipsync(flat, np.zeros((16000, 2)), SAMPLE_RATE)
