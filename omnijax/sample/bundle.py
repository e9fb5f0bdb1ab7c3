"""An exported model directory: its format, and the reader the sampler uses.

    EXPORT_DIR/
      export.json          everything a sampler needs to know (below); the directory
                           describes itself, the training config is never read again
      mmdit/               the denoiser (omnijax.models.mmdit.save: config.json + state/)
      vae/                 the VAE that made the training latents (omnijax.models.vae.save)
      encoders/audio|text/ weights of the frozen encoders, when their specs name files
      serialized/          optional: the segment program through jax.export (export.py)
      curves/, eval.json   optional: the training curves and evaluation of this model

export.json (`FORMAT`, version 1):
    kind          "mmdit" (a VAE export is a VAE directory with kind "vae" instead)
    recipe        flow_shift, t_mean/t_std, latent_frames/height/width, motion_frames, stage
    video         fps, height, width, frames_per_segment, motion_video_frames, sample_rate
    pose          heatmap scale and sigma (as preprocess made them)
    encoders      audio and text spec strings (paths relative to EXPORT_DIR)
    sampler       defaults: solver, steps, cfg_text, cfg_audio (start, end), schedule
    conditions    the conditions the model was trained with (stage ratio > 0)
    text_len      tokens per caption the text stream was trained with
    dtype         parameter dtype of mmdit/
    source        checkpoint directory, step, which weights (ema | params), lora_merged

Reading validates the directory and answers a wrong path with `UsageError` (one line at
the CLI): the sampler trusts what `load_bundle` returns.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from omnijax.errors import UsageError

FORMAT = "omnijax-export"
VERSION = 1
META = "export.json"


@dataclasses.dataclass
class Bundle:
    """A loaded export: the modules, the encoders and export.json (`meta`)."""

    path: str
    meta: dict[str, Any]
    mmdit: Any
    vae: Any
    audio_encoder: Any
    text_encoder: Any
    # compiled segment programs by SegmentSpec: every video sampled from one bundle with one
    # spec reuses the same program (eval samples dozens of videos)
    segment_fns: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def recipe(self) -> dict[str, Any]:
        return self.meta["recipe"]

    @property
    def video(self) -> dict[str, Any]:
        return self.meta["video"]


def read_meta(path: str) -> dict[str, Any]:
    """export.json of `path`, checked; UsageError when `path` is not an export directory."""
    meta_path = os.path.join(path, META)
    if not os.path.isdir(path):
        raise UsageError(f"--model {path!r}: no such directory (expected an `omnijax export` output)")
    if not os.path.exists(meta_path):
        raise UsageError(f"--model {path!r} is not an exported model: it has no {META} "
                         "(make one with `omnijax export --ckpt TRAIN_DIR --out DIR`)")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise UsageError(f"--model {path!r}: {META} is unreadable ({e})") from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise UsageError(f"--model {path!r}: {META} is format {meta.get('format')!r} version "
                         f"{meta.get('version')!r}; this omnijax reads {FORMAT!r} version {VERSION}")
    return meta


def resolve_spec(spec: str, root: str) -> str:
    """An encoder spec whose path is relative to the export directory -> absolute."""
    name, sep, rest = spec.partition(":")
    if not sep or not rest or "=" in rest.split(":")[0]:
        return spec
    path, sep2, options = rest.partition(":")
    full = path if os.path.isabs(path) else os.path.join(root, path)
    return f"{name}:{full}" + (f":{options}" if sep2 else "")


def load_bundle(path: str, *, compute_dtype: str | None = None, attention: str | None = None) -> Bundle:
    """Load an MMDiT export. `compute_dtype` overrides the matmul dtype (e.g. float32 on a
    CPU for bfloat16 weights); `attention` the attention implementation."""
    from omnijax.models import mmdit, vae
    from omnijax.models.encoders import get_audio_encoder, get_text_encoder

    path = os.path.abspath(path)
    meta = read_meta(path)
    if meta.get("kind") != "mmdit":
        raise UsageError(f"--model {path!r} holds a {meta.get('kind')!r} export; sampling needs an "
                         "MMDiT export")
    for sub in ("mmdit", "vae"):
        if not os.path.exists(os.path.join(path, sub, "config.json")):
            raise UsageError(f"--model {path!r} is incomplete: {sub}/ is missing")
    overrides = {k: v for k, v in (("dtype", compute_dtype), ("attention", attention)) if v}
    model = mmdit.load(os.path.join(path, "mmdit"), **overrides)
    enc = meta["encoders"]
    return Bundle(path=path, meta=meta, mmdit=model, vae=vae.load(os.path.join(path, "vae")),
                  audio_encoder=get_audio_encoder(resolve_spec(enc["audio"], path)),
                  text_encoder=get_text_encoder(resolve_spec(enc["text"], path)))
