"""The batches each objective trains on: config + mesh -> a checkpointable iterator that
yields this process's rows of every global batch (dicts of numpy arrays).

    process_rows     the rows this process feeds, under the mesh's batch sharding
    mmdit_batches    data.source = synthetic (random latents in the cached-example schema)
                     | shards (the grain pipeline over `omnijax preprocess` output)
    vae_batches      data.source = synthtalk (SynthTalk clips rendered on the fly)

The sources themselves live in `omnijax.data` (synthetic_batches, pipeline); this module
only maps the training config onto them. Every iterator has `get_state` / `set_state`, so
the checkpoint resumes it.
"""

from __future__ import annotations

from jax.sharding import Mesh

from omnijax.data import curriculum, pipeline
from omnijax.data import synthetic_batches as synth
from omnijax.models import partitioning
from omnijax.train import mesh as mesh_lib


def process_rows(cfg, mesh: Mesh) -> tuple[int, int]:
    """[start, stop) of the global batch (`train.batch_size`) this process's devices hold."""
    rules = mesh_lib.rules_from_config(cfg.mesh.get("rules"))
    return pipeline.local_rows(partitioning.batch_sharding(mesh, 1, rules), int(cfg.train.batch_size))


def _stage(cfg) -> curriculum.Stage:
    return curriculum.get_stage(cfg.curriculum.stage, dict(cfg.curriculum.get("ratios", {})))


def mmdit_batches(cfg, mesh: Mesh, objective):
    """Batches in the cached-example schema with `keep_*` masks, shaped as
    `objective.batch_spec` says (the step is compiled for that one shape)."""
    d = cfg.data
    rows = process_rows(cfg, mesh)
    if d.source == "shards":
        return _shards(cfg, rows, objective)
    if d.source != "synthetic":
        raise ValueError(f"data.source must be 'synthetic' or 'shards', got {d.source!r}")
    spec = objective.batch_spec(1)
    _, F, h, w, c = spec["latents"].shape
    _, _, K, _ = spec["keypoints"].shape
    _, L, text_dim = spec["text"].shape
    make = synth.synthetic_latents(
        seed=int(d.seed), batch=int(cfg.train.batch_size), frames=F, height=h, width=w,
        channels=c, audio_dim=spec["audio"].shape[-1], keypoints=K,
        text_len=L, text_dim=text_dim, stage=_stage(cfg))
    return synth.IndexedBatches(make, rows, tuple(d.get("inject_nan_at", ())), "latents")


def _shards(cfg, rows: tuple[int, int], objective):
    """The grain pipeline over preprocessed ArrayRecord shards (one bucket: one shape)."""
    d = cfg.data
    if not d.path:
        raise ValueError("data.source='shards' needs --config.data.path=<preprocess output dir>")
    bucket = str(d.bucket) if d.bucket else None
    pipeline.check_cache(str(d.path), bucket,
                         {k: tuple(v.shape[1:]) for k, v in objective.batch_spec(1).items()})
    local = rows[1] - rows[0]
    pc = pipeline.PipelineConfig(
        data_dir=str(d.path), batch_size=local, stage=cfg.curriculum.stage,
        keep_ratios=dict(cfg.curriculum.get("ratios", {})),
        bucket_weights={bucket: 1.0} if bucket else None, seed=int(d.seed),
        worker_count=int(d.get("workers", 0)), read_threads=int(d.get("read_threads", 2)),
        # the record shard is this process's block of batch rows, not its process index:
        # processes holding the same rows (a model axis across them) must read the same records
        shard_index=rows[0] // local, shard_count=int(cfg.train.batch_size) // local)
    return pipeline.make_iterator(pc)


def vae_batches(cfg, mesh: Mesh, objective):
    """SynthTalk clips `(B, T, H, W, 3)` in [-1, 1] at the objective's clip shape."""
    d = cfg.data
    if d.source != "synthtalk":
        raise ValueError(f"VAE data.source must be 'synthtalk', got {d.source!r}")
    _, T, H, W, _ = objective.batch_spec(1)["video"].shape
    make = synth.synthtalk_videos(seed=int(d.seed), batch=int(cfg.train.batch_size),
                                  frames=T, height=H, width=W, framing=str(d.get("framing", "full")),
                                  mouth_scale=float(d.get("mouth_scale", 1.0)))
    return synth.IndexedBatches(make, process_rows(cfg, mesh),
                                tuple(d.get("inject_nan_at", ())), "video")
