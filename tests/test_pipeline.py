"""The grain pipeline: exact resume from iterator state, disjoint covering process shards,
single-shape bucket batches mixed by weight, dropout ratios and the flags that veto them, a
new permutation every epoch, global arrays on a mesh."""

import collections
import json

import jax
import numpy as np
import pytest

from data_helpers import fake_cache, fake_example
from omnijax.data import curriculum
from omnijax.data import pipeline as pl
from omnijax.data import schema

SQ, WIDE = schema.bucket_name(9, 32, 32), schema.bucket_name(5, 32, 48)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cache"))
    ids = fake_cache(out, {"9x32x32": 40, "5x32x48": 24}, shards_per_bucket=3, audio_ok_fraction=0.5)
    return out, ids


def _ids(batch):
    return [int(i) for i in batch["text"][:, 0, 0]]


def _same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_restoring_state_gives_exactly_the_uninterrupted_batches(cache):
    cfg = pl.PipelineConfig(cache[0], batch_size=4, stage=3, seed=7)
    it = pl.make_iterator(cfg)
    for _ in range(13):  # past one epoch of the wide bucket
        next(it)
    state = it.get_state()
    want = [next(it) for _ in range(12)]
    resumed = pl.make_iterator(cfg)
    resumed.set_state(json.loads(json.dumps(state)))  # the state survives a JSON checkpoint
    for a, b in zip(want, (next(resumed) for _ in range(12))):
        _same(a, b)
    # and a fresh iterator replays the stream from the start
    fresh = pl.make_iterator(cfg)
    first = [next(fresh) for _ in range(13)]
    again = pl.make_iterator(cfg)
    for a in first:
        _same(a, next(again))


def test_multiprocess_prefetch_gives_the_same_stream_and_resumes(cache):
    cfg0 = pl.PipelineConfig(cache[0], batch_size=4, stage=2, seed=3)
    ref = pl.make_iterator(cfg0)
    want = [next(ref) for _ in range(8)]
    it = pl.make_iterator(pl.PipelineConfig(cache[0], batch_size=4, stage=2, seed=3, worker_count=1))
    got = [next(it) for _ in range(5)]
    state = json.loads(json.dumps(it.get_state()))
    for a, b in zip(want, got):
        _same(a, b)
    it2 = pl.make_iterator(pl.PipelineConfig(cache[0], batch_size=4, stage=2, seed=3, worker_count=1))
    it2.set_state(state)
    for a in want[5:]:
        _same(a, next(it2))


def test_process_shards_are_disjoint_and_cover_the_data(cache):
    out, ids = cache
    seen = []
    for index in range(3):
        cfg = pl.PipelineConfig(out, batch_size=1, seed=0, num_epochs=1, shard_index=index, shard_count=3,
                                bucket_weights={"9x32x32": 1.0})
        ds = pl.make_dataset(cfg)
        seen.append({i for b in (ds[j] for j in range(len(ds))) for i in _ids(b)})
    for a in range(3):
        for b in range(a + 1, 3):
            assert not seen[a] & seen[b]
    assert set().union(*seen) == set(ids[SQ])
    assert list(pl.shard_of(10, 1, 3)) == [1, 4, 7]
    with pytest.raises(ValueError, match="shard index"):
        pl.shard_of(10, 3, 3)


def test_buckets_give_single_shape_batches_mixed_by_weight(cache):
    out, ids = cache
    it = pl.make_iterator(pl.PipelineConfig(out, batch_size=4, seed=1, bucket_weights={SQ: 3.0, "5x32x48": 1.0}))
    counts = collections.Counter()
    for _ in range(40):
        b = next(it)
        shapes = {k: v.shape for k, v in b.items()}
        assert all(s[0] == 4 for s in shapes.values())
        bucket = SQ if shapes["latents"][1:] == (3, 4, 4, 16) else WIDE
        if bucket == WIDE:
            assert shapes["latents"][1:] == (2, 4, 6, 16) and shapes["keypoints"][1:] == (5, 13, 3)
        assert set(_ids(b)) <= set(ids[bucket])  # a batch never mixes buckets
        counts[bucket] += 1
    assert counts[SQ] == 30 and counts[WIDE] == 10  # weights 3:1
    only_wide = pl.make_iterator(pl.PipelineConfig(out, batch_size=4, bucket_weights={WIDE: 1.0, SQ: 0.0}))
    assert all(next(only_wide)["latents"].shape[1] == 2 for _ in range(5))
    with pytest.raises(ValueError, match="not in the data"):
        pl.make_dataset(pl.PipelineConfig(out, bucket_weights={"17x64x64": 1.0}))


def test_dropout_ratios_follow_the_stage_and_the_flags(cache):
    out, _ = cache
    stage = curriculum.get_stage(3)
    it = pl.make_iterator(pl.PipelineConfig(out, batch_size=8, stage=3, seed=2))
    batches = [next(it) for _ in range(100)]
    keep = {k: np.concatenate([b[k] for b in batches]) for k in schema.KEEP_KEYS}
    audio_ok = np.concatenate([b["audio_ok"] for b in batches])
    pose_ok = np.concatenate([b["pose_ok"] for b in batches])
    n = audio_ok.size
    assert not keep["keep_audio"][~audio_ok].any()  # failed sync: never shown audio
    assert 0.3 < audio_ok.mean() < 0.7 and pose_ok.all()
    for c, ratio in stage.ratios().items():
        eligible = audio_ok if c == "audio" else np.ones(n, bool)
        got = keep[f"keep_{c}"][eligible].mean()
        assert abs(got - ratio) < 4 * np.sqrt(ratio * (1 - ratio) / eligible.sum()) + 1e-9, (c, got, ratio)
    for k in schema.KEEP_KEYS:
        assert batches[0][k].shape == (8,) and batches[0][k].dtype == bool
    s1 = pl.make_iterator(pl.PipelineConfig(out, batch_size=8, stage=1, keep_ratios={"ref": 1.0}))
    b = next(s1)
    assert b["keep_ref"].all() and not b["keep_audio"].any() and not b["keep_pose"].any()


def test_failed_pose_is_never_kept(tmp_path):
    """pose_ok False (keypoints not visible) => keep_pose False, whatever the stage's ratio;
    the pose_ok records still keep pose at the ratio, so the check is not vacuous."""
    from omnijax.data.preprocess import write_records

    out = tmp_path / "flags"
    (out / SQ).mkdir(parents=True)
    # ids 0..39; pose fails on every third, audio on every fourth: all four flag combinations
    write_records(str(out / SQ / "shard-00000.array_record"), [
        schema.encode(fake_example(i, 9, 32, 32, audio_ok=i % 4 != 0, pose_ok=i % 3 != 0)) for i in range(40)])
    (out / "manifest.json").write_text(json.dumps({"schema_version": schema.SCHEMA_VERSION, "buckets": {
        SQ: {"frames": 9, "height": 32, "width": 32, "records": 40, "shards": [f"{SQ}/shard-00000.array_record"]}}}))
    ratio = curriculum.get_stage(3).pose
    assert 0 < ratio < 1
    it = pl.make_iterator(pl.PipelineConfig(str(out), batch_size=8, stage=3, seed=4))
    batches = [next(it) for _ in range(60)]
    ids = np.concatenate([_ids(b) for b in batches])
    pose_ok = np.concatenate([b["pose_ok"] for b in batches])
    keep_pose = np.concatenate([b["keep_pose"] for b in batches])
    keep_audio = np.concatenate([b["keep_audio"] for b in batches])
    np.testing.assert_array_equal(pose_ok, ids % 3 != 0)  # the flag travels with its record
    assert (~pose_ok).sum() > 100 and not keep_pose[~pose_ok].any()
    assert not keep_audio[ids % 4 == 0].any()
    got = keep_pose[pose_ok].mean()
    assert abs(got - ratio) < 4 * np.sqrt(ratio * (1 - ratio) / pose_ok.sum()), got


def test_every_epoch_is_a_new_permutation_of_the_same_records(cache):
    out, ids = cache
    cfg = pl.PipelineConfig(out, batch_size=4, seed=5, num_epochs=3, bucket_weights={SQ: 1.0})
    ds = pl.make_dataset(cfg)
    per_epoch = len(ids[SQ]) // 4
    assert len(ds) == 3 * per_epoch
    order = [i for j in range(len(ds)) for i in _ids(ds[j])]
    epochs = [order[e * len(ids[SQ]):(e + 1) * len(ids[SQ])] for e in range(3)]
    for e in epochs:
        assert sorted(e) == sorted(ids[SQ])  # each epoch reads every record once
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2] and epochs[0] != epochs[2]
    assert epochs[0] != sorted(epochs[0])  # shuffled at all
    # the same seed gives the same epochs (resume), another seed other ones
    again = pl.make_dataset(cfg)
    assert [i for j in range(len(again)) for i in _ids(again[j])] == order
    other = pl.make_dataset(pl.PipelineConfig(out, batch_size=4, seed=6, num_epochs=1, bucket_weights={SQ: 1.0}))
    assert [i for j in range(len(other)) for i in _ids(other[j])] != epochs[0]


def test_global_arrays_on_the_mesh(cache):
    mesh = jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    batch = next(pl.make_iterator(pl.PipelineConfig(cache[0], batch_size=8)))
    g = pl.to_global(batch, mesh)
    assert g["latents"].shape == batch["latents"].shape  # one process: global == local
    assert g["latents"].sharding.spec == jax.sharding.PartitionSpec("data", None, None, None, None)
    assert g["keep_ref"].sharding.spec == jax.sharding.PartitionSpec("data")
    assert len(g["latents"].addressable_shards) == 8
    assert g["latents"].addressable_shards[0].data.shape[0] == 2  # 8 rows over data=4
    np.testing.assert_array_equal(np.asarray(g["keep_ref"]), batch["keep_ref"])
    np.testing.assert_array_equal(np.asarray(g["keypoints"]), batch["keypoints"])


def test_bad_data_dirs_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        pl.make_dataset(pl.PipelineConfig(str(tmp_path)))
    fake_cache(str(tmp_path / "small"), {"9x32x32": 3}, shards_per_bucket=1)
    with pytest.raises(ValueError, match="fewer than one batch"):
        pl.make_dataset(pl.PipelineConfig(str(tmp_path / "small"), batch_size=4))
