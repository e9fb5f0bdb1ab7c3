r"""python -m omnijax.train --config=configs/omnihuman.py:size=tiny,stage=1 --workdir=runs/s1
python -m omnijax.train --config=configs/omnihuman.py:size=tiny,stage=2 --workdir=runs/s2 \
    --config.init_from=runs/s1
python -m omnijax.train --config=configs/omnihuman.py:size=tiny,stage=3,data=shards \
    --workdir=runs/s3 --config.init_from=runs/s2 --config.data.path=data/cache

MMDiT training with the three-stage omni-conditions curriculum (the commands above run
stages 1 -> 2 -> 3, each starting from the previous stage's weights).
Arg keys: size (an MMDiTConfig preset: tiny|small|base|large), stage (1|2|3), data
(synthetic|shards), lora (rank; 0 = full fine-tune), and any MMDiTConfig field (e.g.
depth=1, width=32) to override the preset. Everything else: --config.<key>=<value>.
"""

from __future__ import annotations

import dataclasses

from omnijax.data import curriculum
from omnijax.models.mmdit import PRESETS, MMDiTConfig
from omnijax.train import config_lib

# Latent shape per size (video = 8x the latent grid, T = 1 + 4(F-1) frames).
# Every shape has room for the 2 clean motion frames of the chaining protocol (README "Long video") plus noisy ones.
_SHAPES = {"tiny": (5, 8, 8), "small": (5, 16, 16), "base": (21, 60, 104), "large": (21, 60, 104)}
_BATCH = {"tiny": 8, "small": 8, "base": 64, "large": 256}


def get_config(arg: str | None = None):
    fields = {f.name: f.default for f in dataclasses.fields(MMDiTConfig)}
    a = config_lib.parse_arg(
        arg, dict(size="tiny", stage=1, data="synthetic", lora=0),
        choices=dict(size=PRESETS, stage=tuple(curriculum.STAGES), data=("synthetic", "shards")),
        optional=fields, optional_help=" or an MMDiTConfig field (depth, width, heads, ...)")
    size, stage, source, rank = a.pop("size"), a.pop("stage"), a.pop("data"), a.pop("lora")
    overrides = a   # what is left: MMDiTConfig fields given in the arg
    MMDiTConfig.preset(size, **overrides)   # an impossible model (width % heads) fails here
    c = config_lib.base()
    c.objective = "mmdit"
    # pose_ignore: keypoints the pose guider never sees. The mouth and chin move with the
    # speech: a pose that carries them drives the lips itself, and the model learns lip-sync
    # from pose rather than from audio (measured on the demo: lips moved with pose and no audio).
    c.model = dict(size=size, overrides=overrides, attention="",
                   pose_ignore=("mouth_top", "mouth_bottom", "chin"))
    F, h, w = _SHAPES[size]
    c.data = dict(source=source, path="", bucket="", seed=0, latent_frames=F, latent_height=h,
                  latent_width=w, text_len=64, inject_nan_at=(), workers=0, read_threads=2)
    # Stage ratios from the curriculum module's defaults, spelled out so they can be
    # overridden: --config.curriculum.ratios.audio=0.3
    c.curriculum = dict(stage=stage, ratios=curriculum.get_stage(stage).ratios())
    # motion_frames: the clean prefix lengths drawn uniformly (latent frames; 2 = the 5 video frames a
    # sampled segment hands the next, README "Long video"), with probability motion_prob.
    # t_shift: "auto" (flow.resolution_shift of the visual token count, bounded in [1, 5])
    # or a number; recorded in every checkpoint as recipe.flow_shift for the sampler.
    c.objective_opts = dict(motion_frames=(2,), motion_prob=0.25, t_mean=0.0, t_std=1.0,
                            t_shift="auto")
    c.train.batch_size = _BATCH[size]
    c.lora.rank = rank
    if size == "tiny":
        c.train.steps, c.optim.warmup_steps, c.optim.decay_steps = 200, 10, 200
        c.optim.lr = 1e-3
        # A save costs about 0.6 s of CPU here (orbax: 0.13 s blocking, the rest writing in
        # the background); every 50 steps (4-5 s apart on a 2-core CPU) the loop spent 13% of
        # its time saving (bench/train.py). 100 steps is about 9 s of work at risk.
        c.checkpoint.every = 100
        c.train.compute_dtype = "float32"    # CPU has no fast bf16
    return c
