"""Preprocess: clips -> ArrayRecord shards. Round trip through the VAE that encoded them,
every feature and flag as expected, bad inputs skipped and counted, resumable re-runs."""

import json
import os
import shutil

import numpy as np
import pytest

from data_helpers import synth_set, tiny_vae_dir
from omnijax.data import keypoints as kpt
from omnijax.data import media, preprocess, schema

BUCKETS = ("9x32x32", "9x32x48")


def _copy_clip(src_base, dst_base, *, audio=True, fps=None):
    """Copy a SynthTalk clip (video, keypoints, caption), optionally without audio or re-timed."""
    for ext in (kpt.SIDECAR_SUFFIX, ".txt"):
        shutil.copy(src_base + ext, dst_base + ext)
    if audio and fps is None:
        shutil.copy(src_base + ".mp4", dst_base + ".mp4")
        return
    frames = media.read_video(src_base + ".mp4", fps)
    wave, sr = media.read_audio(src_base + ".mp4", 16000)
    media.write_video(dst_base + ".mp4", frames, fps or 25.0, wave if audio else None, sr)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.getbasetemp()
    square = synth_set(root, "pp_square", clips=4, seed=5, out_of_sync=0.25, occluded=0.0, missing=0.25)
    wide = synth_set(root, "pp_wide", clips=1, seed=6, width=96, out_of_sync=0.0, occluded=0.0, missing=0.0)
    clips = tmp_path_factory.mktemp("pp_in")
    for i in range(4):
        _copy_clip(os.path.join(square, "clips", f"clip_{i:06d}"), str(clips / f"a{i}"))
    _copy_clip(os.path.join(wide, "clips", "clip_000000"), str(clips / "b_wide"))
    base0 = os.path.join(square, "clips", "clip_000000")
    _copy_clip(base0, str(clips / "c_noaudio"), audio=False)
    _copy_clip(base0, str(clips / "d_30fps"), fps=30.0)
    (clips / "e_corrupt.mp4").write_bytes(os.urandom(4000))
    data = open(base0 + ".mp4", "rb").read()
    (clips / "f_truncated.mp4").write_bytes(data[: len(data) // 3])
    media.write_video(str(clips / "g_short.mp4"), media.read_video(base0 + ".mp4")[:5], 25.0)
    out = str(tmp_path_factory.mktemp("pp_out"))
    cfg = preprocess.PreprocessConfig(buckets=BUCKETS, clips_per_shard=4, batch_size=4,
                                      vae=tiny_vae_dir(root))
    manifest = preprocess.run(str(clips), out, cfg, progress=False)
    truth = json.load(open(os.path.join(square, "truth.json")))
    return {"clips": str(clips), "out": out, "cfg": cfg, "manifest": manifest, "truth": truth}


def _records(out, bucket):
    from array_record.python.array_record_module import ArrayRecordReader

    m = json.load(open(os.path.join(out, "manifest.json")))
    recs = []
    for shard in m["buckets"][bucket]["shards"]:
        r = ArrayRecordReader(os.path.join(out, shard))
        recs += [schema.decode(b) for b in r.read_all()]
        r.close()
    return recs


def _clip_records(data, name, bucket):
    """The records of clip `name` in `bucket` (records follow clip order in the manifest)."""
    recs = _records(data["out"], bucket)
    start = 0
    for info in data["manifest"]["clip_info"]:
        n = info["windows"].get(bucket, 0)
        if os.path.basename(info["file"]) == name:
            return recs[start:start + n]
        start += n
    raise KeyError(name)


def test_manifest_counts_shapes_and_skips(data):
    m = data["manifest"]
    assert m["clips"] == {"total": 10, "used": 7, "skipped": 3, "audio_ok": m["clips"]["audio_ok"],
                          "no_audio": 1, "no_keypoints": 0}
    reasons = {os.path.basename(s["file"]): s["reason"] for s in m["skipped"]}
    assert set(reasons) == {"e_corrupt.mp4", "f_truncated.mp4", "g_short.mp4"}
    for name, reason in reasons.items():
        assert name in reason  # every reason names its file
    assert "shorter than asked" in reasons["g_short.mp4"]
    sq, wd = schema.bucket_name(9, 32, 32), schema.bucket_name(9, 32, 48)
    assert m["buckets"][sq]["shapes"] == {
        "latents": [3, 4, 4, 16], "ref_latent": [1, 4, 4, 16], "audio": [9, 80],
        "pose": [9, 16, 16, 13], "text": [64, 64], "text_mask": [64], "audio_ok": [], "pose_ok": []}
    assert m["buckets"][wd]["shapes"]["pose"] == [9, 16, 24, 13]
    assert m["buckets"][wd]["records"] == 5  # only the wide clip: 50 frames -> 5 windows of 9
    assert m["buckets"][sq]["records"] == 6 * 5
    assert m["encoders"]["audio"] == "mel" and m["encoders"]["text"] == "bytes"
    assert not [f for _, _, fs in os.walk(data["out"]) for f in fs if f.endswith(".tmp")]


def test_latents_round_trip_through_the_same_vae(data):
    from omnijax.models import vae as vae_lib

    vae = vae_lib.load(data["cfg"].vae)
    recs = _clip_records(data, "a1.mp4", "t9_h32_w32")
    frames = preprocess.crop_resize(media.read_video(os.path.join(data["clips"], "a1.mp4"), 25.0), 32, 32)
    video = media.to_float(frames[9:18])[None]  # the second window
    want = np.asarray(vae.normalize(vae.encode(video)))[0]
    np.testing.assert_allclose(recs[1]["latents"], want, atol=1e-5)
    ref = np.asarray(vae.normalize(vae.encode(media.to_float(frames[25:26])[None])))[0]
    np.testing.assert_allclose(recs[1]["ref_latent"], ref, atol=1e-5)
    # decode(latents from the shard) == decode(encode(frames)) with that same VAE
    from_shard = vae.decode(vae.denormalize(recs[1]["latents"][None]), streamed=False)
    direct = vae.decode(vae.encode(video), streamed=False)
    np.testing.assert_allclose(np.asarray(from_shard), np.asarray(direct), atol=1e-4)


def test_audio_text_pose_features_and_flags(data):
    from omnijax.models.encoders import get_audio_encoder, get_text_encoder

    path = os.path.join(data["clips"], "a2.mp4")
    recs = _clip_records(data, "a2.mp4", "t9_h32_w32")
    wave, _ = media.read_audio(path, 16000)
    mel = get_audio_encoder("mel")(wave, 16000, 25.0, 50)
    text, mask = get_text_encoder("bytes")([open(path[:-4] + ".txt").read().strip()])
    kp = preprocess.transform_keypoints(kpt.load_keypoints(path[:-4] + kpt.SIDECAR_SUFFIX)[0],
                                        64, 64, 32, 32, 0.5)
    for j, r in enumerate(recs):
        np.testing.assert_allclose(r["audio"], mel[9 * j:9 * j + 9], atol=1e-6)
        np.testing.assert_array_equal(r["text"], text[0])
        np.testing.assert_array_equal(r["text_mask"], mask[0])
        for t in range(9):
            for k in range(13):
                x, y, vis = kp[9 * j + t, k]
                ch = r["pose"][t, ..., k].astype(np.float32)
                if vis:  # the heatmap peaks on the keypoint's pixel
                    iy, ix = np.unravel_index(np.argmax(ch), ch.shape)
                    assert abs(ix + 0.5 - x) <= 0.5 + 1e-3 and abs(iy + 0.5 - y) <= 0.5 + 1e-3
                else:
                    assert not ch.any()


def test_flags_follow_the_filters_not_the_truth_file(data):
    truth = data["truth"]
    info = {os.path.basename(i["file"]): i for i in data["manifest"]["clip_info"]}
    for i in range(4):
        t = truth[f"clip_{i:06d}"]
        recs = _clip_records(data, f"a{i}.mp4", "t9_h32_w32")
        assert {bool(r["audio_ok"]) for r in recs} == {not t["out_of_sync"]}, (i, info[f"a{i}.mp4"])
        if t["keypoints"] == "missing":
            assert not any(r["pose_ok"] for r in recs)
        else:
            assert all(r["pose_ok"] for r in recs)
    noaudio = _clip_records(data, "c_noaudio.mp4", "t9_h32_w32")
    assert len(noaudio) == 5 and not any(r["audio_ok"] for r in noaudio)
    assert info["c_noaudio.mp4"]["has_audio"] is False


def test_wrong_fps_input_is_resampled(data):
    info = {os.path.basename(i["file"]): i for i in data["manifest"]["clip_info"]}
    assert info["d_30fps.mp4"]["frames"] == 50 and info["d_30fps.mp4"]["windows"] == {"t9_h32_w32": 5}
    assert info["d_30fps.mp4"]["audio_ok"] == info["a0.mp4"]["audio_ok"]


def test_rerun_skips_finished_shards_and_redoes_missing_ones(data):
    out, cfg = data["out"], data["cfg"]
    shards = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(out) for f in fs if f.endswith(".array_record"))
    mtimes = {p: os.stat(p).st_mtime_ns for p in shards}
    again = preprocess.run(data["clips"], out, cfg, progress=False)
    assert again["resumed_shards"] == 3 and again["records"] == data["manifest"]["records"]
    assert {p: os.stat(p).st_mtime_ns for p in shards} == mtimes
    os.remove(os.path.join(out, "_done", "shard-00001.json"))  # as if killed mid-shard
    redo = preprocess.run(data["clips"], out, cfg, progress=False)
    assert redo["resumed_shards"] == 2 and redo["records"] == data["manifest"]["records"]
    changed = {p for p in shards if os.stat(p).st_mtime_ns != mtimes[p]}
    assert changed and all("shard-00001" in p for p in changed)
    # the CLI resumes the same directory too (all shards done: no encoder is even built)
    args = ["--clips", data["clips"], "--out", out, "--clips-per-shard", "4", "--vae", cfg.vae]
    for b in BUCKETS:
        args += ["--bucket", b]
    assert preprocess.main(args) == 0
    with pytest.raises(ValueError, match="different config"):
        preprocess.run(data["clips"], out, preprocess.PreprocessConfig(buckets=("17x32x32",), vae=cfg.vae))


def test_parallel_workers_split_the_shards(data, tmp_path):
    clips = tmp_path / "in"
    clips.mkdir()
    for name in ("a0", "a1"):
        for ext in (".mp4", kpt.SIDECAR_SUFFIX, ".txt"):
            shutil.copy(os.path.join(data["clips"], name + ext), clips / (name + ext))
    cfg = preprocess.PreprocessConfig(buckets=BUCKETS, clips_per_shard=1, batch_size=4, vae=data["cfg"].vae)
    first = preprocess.run(str(clips), str(tmp_path / "out"), cfg, progress=False, worker_index=1, num_workers=2)
    assert first["pending_shards"] == [0] and not (tmp_path / "out" / "manifest.json").exists()
    last = preprocess.run(str(clips), str(tmp_path / "out"), cfg, progress=False, worker_index=0, num_workers=2)
    assert last["records"] == 10 and last["buckets"]["t9_h32_w32"]["shards"] == [
        "t9_h32_w32/shard-00000.array_record", "t9_h32_w32/shard-00001.array_record"]
    # the same windows as the single-worker run
    one = _clip_records(data, "a1.mp4", "t9_h32_w32")
    two = _records(str(tmp_path / "out"), "t9_h32_w32")[5:]
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a["latents"], b["latents"])


def test_geometry_helpers():
    assert preprocess.crop_box(64, 96, 32, 32) == (0, 16, 64, 64)
    assert preprocess.crop_box(64, 64, 32, 48) == (10, 0, 43, 64)
    shapes = [(9, 32, 32), (17, 64, 64), (9, 32, 48)]
    assert preprocess.choose_buckets(64, 64, shapes) == [(9, 32, 32), (17, 64, 64)]
    assert preprocess.choose_buckets(64, 100, shapes) == [(9, 32, 48)]
    kp = np.array([[[16.0, 32.0, 1.0], [2.0, 5.0, 1.0]]], np.float32)
    out = preprocess.transform_keypoints(kp, 64, 96, 32, 32, 0.5)  # crop x in [16, 80)
    np.testing.assert_allclose(out[0, 0], [0.0, 8.0, 1.0])
    assert out[0, 1, 2] == 0.0  # outside the crop: invisible
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        schema.parse_bucket("8x32x32")


def test_keypoints_are_retimed_like_the_frames():
    kp = np.zeros((30, 13, 3), np.float32)
    kp[:, 0, 0] = np.arange(30)
    kp[..., 2] = 1
    out = preprocess.resample_keypoints(kp, 30.0, 25.0, 26)
    # the nearest source row by time, as media.iter_frames picks frames (30 -> 25 fps)
    assert out[:25, 0, 0].astype(int).tolist() == [int(np.floor(i * 30 / 25 + 0.5)) for i in range(25)]
    assert out[25, 0, 2] == 0  # past the sidecar's end: not visible
