"""The training input pipeline: cached ArrayRecord shards -> sharded, shuffled, curriculum-
dropped, single-shape batches -> global arrays on the mesh.

One grain chain per shape bucket, mixed by bucket weight:

    ArrayRecordDataSource(bucket shards)
      -> this process's slice (records i with i % shard_count == shard_index; the trainer
         passes its block of batch rows, so processes holding the same rows read the same records)
      -> seeded shuffle (a new permutation every epoch) -> repeat
      -> parse (schema.decode) -> curriculum condition dropout (seeded per record)
      -> batch (one bucket => one shape per batch)
    mix(buckets, weights) -> iterator [-> multiprocess prefetch, worker_count > 0]
      -> to_global: this process's rows -> global arrays split by partitioning.batch_sharding

Every step before the iterator is a MapDataset, so the whole stream is a pure function of
(seed, position): the iterator's `get_state()` is a small dict and `set_state()` resumes
the exact batches (the trainer's checkpoint stores it). A resolution schedule is a change of
`bucket_weights` in the config, nothing else.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import grain
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from omnijax.data import curriculum, schema
from omnijax.models import partitioning


@dataclasses.dataclass
class PipelineConfig:
    data_dir: str
    batch_size: int = 4  # per process
    stage: int | str = 1
    keep_ratios: Mapping[str, float] | None = None  # overrides of the stage's keep ratios
    bucket_weights: Mapping[str, float] | None = None  # "17x64x64" or "t17_h64_w64" -> weight; None: equal
    seed: int = 0
    worker_count: int = 0  # 0: in-process; >0: grain multiprocess prefetch
    worker_buffer_size: int = 2
    read_threads: int = 2
    num_epochs: int | None = None  # None: repeat forever
    shard_index: int | None = None  # None: jax.process_index()
    shard_count: int | None = None  # None: jax.process_count()


# Transforms live at module level so grain worker processes can unpickle them.
class ParseRecord(grain.transforms.Map):
    def map(self, record: bytes) -> dict[str, np.ndarray]:
        return schema.decode(record)


@dataclasses.dataclass(frozen=True)
class ConditionDropout(grain.transforms.RandomMap):
    """Adds keep_ref/keep_text/keep_audio/keep_pose (scalar bool) from the stage's ratios."""

    stage: curriculum.Stage

    def random_map(self, example: dict, rng: np.random.Generator) -> dict:
        keep = curriculum.keep_masks(self.stage, example["audio_ok"][None], example["pose_ok"][None], rng)
        return example | {k: v[0] for k, v in keep.items()}


def stack_batch(examples: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack equal-shape examples along a new leading B axis."""
    keys = examples[0].keys()
    out = {}
    for k in keys:
        try:
            out[k] = np.stack([e[k] for e in examples])
        except ValueError:
            shapes = sorted({tuple(np.shape(e[k])) for e in examples})
            raise ValueError(f"cannot batch {k!r}: examples of one bucket have shapes {shapes}") from None
    return out


def _bucket_key(name: str) -> str:
    return schema.bucket_name(*schema.parse_bucket(name))


def read_current_manifest(data_dir: str) -> dict:
    """OUT/manifest.json, refused (with what to do) when another schema version wrote it."""
    from omnijax.data.preprocess import read_manifest

    manifest = read_manifest(data_dir)
    if manifest.get("schema_version") != schema.SCHEMA_VERSION:
        raise ValueError(f"{data_dir}: cache written with schema {manifest.get('schema_version')}, "
                         f"this version reads schema {schema.SCHEMA_VERSION}; run `omnijax preprocess` "
                         "again into a new directory")
    return manifest


def bucket_sources(data_dir: str) -> dict[str, list[str]]:
    """bucket name -> its shard paths, from OUT/manifest.json."""
    manifest = read_current_manifest(data_dir)
    out = {}
    for name, b in sorted(manifest["buckets"].items()):
        paths = [os.path.join(data_dir, s) for s in b["shards"]]
        missing = [p for p in paths if not os.path.exists(p)]
        if missing:
            raise FileNotFoundError(f"{data_dir}: manifest lists shards that are missing: {missing[:3]}")
        out[name] = paths
    if not out:
        raise ValueError(f"{data_dir}: manifest has no buckets (no clip produced an example)")
    return out


def resolve_weights(names: Sequence[str], weights: Mapping[str, float] | None) -> dict[str, float]:
    """Config weights (any bucket spelling) -> {bucket: weight > 0}; unknown names are errors."""
    if weights is None:
        return {n: 1.0 for n in names}
    given = {_bucket_key(k): float(v) for k, v in weights.items()}
    unknown = set(given) - set(names)
    if unknown:
        raise ValueError(f"bucket_weights name buckets not in the data: {sorted(unknown)}; have {list(names)}")
    out = {n: given.get(n, 0.0) for n in names}
    if any(w < 0 for w in out.values()) or not any(w > 0 for w in out.values()):
        raise ValueError(f"bucket_weights must be >= 0 with at least one > 0, got {out}")
    return {n: w for n, w in out.items() if w > 0}


def shard_of(n: int, index: int, count: int) -> range:
    """Record indices one process reads: every `count`-th from `index` (disjoint, covering)."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} must be in [0, {count})")
    return range(index, n, count)


def make_dataset(cfg: PipelineConfig) -> grain.MapDataset:
    """The deterministic MapDataset of batches (before the iterator and prefetch)."""
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")
    index = jax.process_index() if cfg.shard_index is None else cfg.shard_index
    count = jax.process_count() if cfg.shard_count is None else cfg.shard_count
    stage = curriculum.get_stage(cfg.stage, cfg.keep_ratios)
    sources = bucket_sources(cfg.data_dir)
    weights = resolve_weights(list(sources), cfg.bucket_weights)
    per_bucket = []
    for i, name in enumerate(sources):
        if name not in weights:
            continue
        ds = grain.MapDataset.source(grain.sources.ArrayRecordDataSource(sources[name]))
        ds = ds[index::count]
        if len(ds) < cfg.batch_size:
            raise ValueError(f"{cfg.data_dir}: bucket {name} has {len(ds)} records for process {index} "
                             f"of {count}, fewer than one batch of {cfg.batch_size}")
        ds = ds.shuffle(seed=(cfg.seed * 1000 + i) % 2**32).repeat(cfg.num_epochs)
        ds = ds.map(ParseRecord())
        ds = ds.random_map(ConditionDropout(stage), seed=(cfg.seed * 1000 + 500 + i) % 2**32)
        per_bucket.append(ds.batch(cfg.batch_size, drop_remainder=True, batch_fn=stack_batch))
    if len(per_bucket) == 1:
        return per_bucket[0]
    return grain.MapDataset.mix(per_bucket, [weights[n] for n in weights])


def make_iterator(cfg: PipelineConfig):
    """-> a checkpointable grain iterator of process-local batches (dicts of numpy arrays).

    `it.get_state()` / `it.set_state(state)` save and restore the position."""
    ds = make_dataset(cfg).to_iter_dataset(
        grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=2 * cfg.batch_size))
    if cfg.worker_count > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain workers read absl flags; a library caller may have none
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(
            num_workers=cfg.worker_count, per_worker_buffer_size=cfg.worker_buffer_size))
    return iter(ds)


def local_rows(sharding: NamedSharding, global_batch: int) -> tuple[int, int]:
    """[start, stop) of the global batch rows that this process's devices hold under
    `sharding` (a `partitioning.batch_sharding`): the rows its iterator must yield."""
    idx = sharding.addressable_devices_indices_map((global_batch,))
    starts = sorted({(s[0].start or 0, s[0].stop or global_batch) for s in idx.values()})
    lo, hi = starts[0][0], max(s[1] for s in starts)
    covered = sum(b - a for a, b in starts)
    if covered != hi - lo:
        raise ValueError(f"process {jax.process_index()} holds non-contiguous batch rows {starts}; "
                         "order the mesh so each process owns one block of the batch axes")
    return lo, hi


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh,
              rules: Mapping[str, Any] | None = None) -> dict[str, jax.Array]:
    """Process-local numpy batch -> global jax arrays (`make_array_from_process_local_data`),
    each split by `partitioning.batch_sharding` (the `batch` rule of `rules`, default the
    active table).

    Each process passes its own rows (`local_rows`); the global batch is their union."""
    return {k: jax.make_array_from_process_local_data(
                partitioning.batch_sharding(mesh, np.ndim(v), rules), np.asarray(v))
            for k, v in batch.items()}


def check_cache(data_dir: str, bucket: str | None, expected: Mapping[str, tuple[int, ...]]) -> None:
    """Fail before compiling when the cached features do not fit what the model expects.

    `expected`: key -> per-example shape the train step is compiled for. An audio/text
    encoder of another width, another VAE, or another bucket than configured would
    otherwise surface as an opaque shape error inside the jitted step.
    """
    manifest = read_current_manifest(data_dir)
    buckets = manifest["buckets"]
    shape_of = {n: f"{b['frames']}x{b['height']}x{b['width']}" for n, b in buckets.items()}
    names = [n for n in buckets if bucket is None or shape_of[n] == bucket]
    if not names:
        raise ValueError(f"{data_dir}: no bucket {bucket!r} in the manifest; it has "
                         f"{sorted(shape_of.values())}")
    for name in names:
        for key, shape in buckets[name].get("shapes", {}).items():
            if key in expected and tuple(shape) != tuple(expected[key]):
                raise ValueError(
                    f"{data_dir}: bucket {name} holds {key} of shape {tuple(shape)} but the "
                    f"model config expects {tuple(expected[key])} (encoders used by preprocess: "
                    f"{manifest.get('encoders')}); match MMDiTConfig's latent_channels / "
                    "audio_dim / text_dim / pose_channels and data.frames/height/width "
                    "to the cache, or preprocess again")


def describe(cfg: PipelineConfig) -> dict[str, Any]:
    """Bucket names, weights and record counts the pipeline will read (for logs)."""
    sources = bucket_sources(cfg.data_dir)
    weights = resolve_weights(list(sources), cfg.bucket_weights)
    return {n: {"weight": weights.get(n, 0.0),
                "records": len(grain.sources.ArrayRecordDataSource(p))} for n, p in sources.items()}
