"""The checks `omnijax preprocess` runs on its arguments and inputs before it writes anything.

Each failure is a `UsageError`: one line that names the flag or file and says what was
expected (`--vae 'runs/vae_typo': no such directory, and not a VAE preset; ...`). Heavy work
(decoding video, loading encoder weights) is left to the run; only what can be known
cheaply is checked here: paths exist, specs parse, numbers are in range, an existing output
directory was made with the same settings.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import json
import os
from typing import TYPE_CHECKING

from omnijax.data import media, schema
from omnijax.errors import UsageError

if TYPE_CHECKING:
    from omnijax.data.preprocess import PreprocessConfig


def find_clips(root: str) -> list[str]:
    """Every video file under `root` (recursive), sorted: the order that defines shards."""
    if os.path.isfile(root):
        return [root]
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such clip directory")
    found = []
    for suffix in media.VIDEO_SUFFIXES:
        found += glob.glob(os.path.join(root, "**", f"*{suffix}"), recursive=True)
    return sorted(p for p in found if not p.endswith(".part"))


def _check_numbers(cfg: PreprocessConfig) -> None:
    bad = [("--fps", cfg.fps, cfg.fps > 0, "> 0"),
           ("--stride", cfg.stride, cfg.stride is None or cfg.stride >= 1, ">= 1"),
           ("--clips-per-shard", cfg.clips_per_shard, cfg.clips_per_shard >= 1, ">= 1"),
           ("--batch-size", cfg.batch_size, cfg.batch_size >= 1, ">= 1"),
           ("--pose-min-visible", cfg.pose_min_visible, 0 <= cfg.pose_min_visible <= 1, "in [0, 1]"),
           ("--sync-min-score", cfg.sync_min_score, -1 <= cfg.sync_min_score <= 1,
            "in [-1, 1] (a correlation)"),
           ("--ref-gap", cfg.ref_gap, cfg.ref_gap >= 1, ">= 1"),
           ("sync_max_lag", cfg.sync_max_lag, cfg.sync_max_lag >= 0, ">= 0")]
    for flag, value, ok, want in bad:
        if not ok:
            raise UsageError(f"{flag} {value}: expected {want}")


def _check_buckets(buckets: tuple[str, ...]) -> None:
    if not buckets:
        raise UsageError("--bucket: none given, expected FRAMESxHEIGHTxWIDTH such as 17x64x64")
    for b in buckets:
        try:
            schema.parse_bucket(b)
        except ValueError as e:  # "bucket '16x64x64': frames must be 1 + 4k, got 16"
            msg = str(e)
            raise UsageError("--" + msg if msg.startswith("bucket ") else f"--bucket {b!r}: {msg}") from None


def _check_vae(spec: str) -> None:
    """A preset name or a directory that vae.save / `omnijax convert wan-vae` wrote."""
    from omnijax import module_io
    from omnijax.models import vae as vae_lib

    want = (f"expected a VAE preset ({', '.join(vae_lib.PRESETS)}) or a directory saved by "
            "vae.save / `omnijax convert wan-vae`")
    if os.path.isdir(spec):
        try:
            module_io.read_config(spec, kind=vae_lib.KIND)
        except (OSError, ValueError) as e:
            raise UsageError(f"--vae {spec!r} is a directory but not a saved VAE ({e}); {want}") from None
    elif os.path.exists(spec):
        raise UsageError(f"--vae {spec!r} is a file; {want}")
    elif spec not in vae_lib.PRESETS:
        raise UsageError(f"--vae {spec!r}: no such directory, and not a VAE preset; {want}")


def _check_encoder(flag: str, spec: str, kind: str) -> None:
    """The spec names a known encoder; a weight-free one is built (cheap: it checks the
    options), a checkpoint one needs an existing directory (its weights load later)."""
    from omnijax.models import encoders

    registry = encoders.AUDIO_ENCODERS if kind == "audio" else encoders.TEXT_ENCODERS
    name, path, options = encoders._parse(spec)
    if name not in registry:
        raise UsageError(f"{flag} {spec!r}: unknown {kind} encoder {name!r}; expected one of "
                         f"{sorted(registry)} as name[:PATH][:key=value,...]")
    if name in ("wav2vec2", "t5"):  # the checkpoint encoders (`encoders._build` says the same)
        if not path:
            raise UsageError(f"{flag} {spec!r}: {name} needs a checkpoint directory, e.g. {name}:PATH")
        if not os.path.isdir(path):
            raise UsageError(f"{flag} {spec!r}: checkpoint directory {path!r} does not exist")
        return
    if path is not None:
        raise UsageError(f"{flag} {spec!r}: {name} is weight-free and takes no path, only options "
                         f"({name}:key=value,...)")
    module, _, factory = registry[name].partition(":")
    cls = getattr(importlib.import_module(module), factory)
    if dataclasses.is_dataclass(cls):  # name the options it takes, not a TypeError from __init__
        known = sorted(f.name for f in dataclasses.fields(cls) if f.init and f.name != "name")
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise UsageError(f"{flag} {spec!r}: unknown option(s) {unknown}; {name} takes {known}")
    try:
        (encoders.get_audio_encoder if kind == "audio" else encoders.get_text_encoder)(spec)
    except (TypeError, ValueError) as e:
        raise UsageError(f"{flag} {spec!r}: {e}") from None


def _check_clips(root: str) -> list[str]:
    suffixes = "|".join(media.VIDEO_SUFFIXES)
    if not os.path.exists(root):
        raise UsageError(f"--clips {root!r}: no such file or directory")
    if os.path.isfile(root) and not root.endswith(media.VIDEO_SUFFIXES):
        raise UsageError(f"--clips {root!r} is not a video ({suffixes}); expected a video or a directory of them")
    clips = find_clips(root)
    if not clips:
        raise UsageError(f"--clips {root!r}: no video files ({suffixes}) under it")
    return clips


def config_blob(cfg: PreprocessConfig) -> dict:
    return dataclasses.asdict(cfg) | {"buckets": list(cfg.buckets)}


def _check_out(out: str, cfg: PreprocessConfig) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out!r} is a file; expected a new directory or one from an earlier run")
    cfg_path = os.path.join(out, "preprocess_config.json")
    if os.path.exists(cfg_path):
        try:
            with open(cfg_path) as f:
                old = json.load(f)
        except ValueError as e:
            raise UsageError(f"--out {out!r}: {cfg_path} is not valid JSON ({e}); "
                             "expected the settings an earlier run wrote") from None
        new = config_blob(cfg)
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if changed:
            raise UsageError(f"--out {out!r} was preprocessed with other settings ({', '.join(changed)} "
                             f"differ, see {cfg_path}); use a new output directory or the same settings")


def check_inputs(clips_root: str, out: str, cfg: PreprocessConfig, worker_index: int = 0,
                 num_workers: int = 1) -> list[str]:
    """Every argument and input, checked before anything is written. -> the clips, sorted.

    Raises UsageError (one line naming the flag or file and what was expected)."""
    if num_workers < 1:
        raise UsageError(f"--num-workers {num_workers}: expected >= 1")
    if not 0 <= worker_index < num_workers:
        raise UsageError(f"--worker-index {worker_index}: expected 0 <= index < --num-workers ({num_workers})")
    _check_numbers(cfg)
    _check_buckets(cfg.buckets)
    _check_encoder("--audio-encoder", cfg.audio_encoder, "audio")
    _check_encoder("--text-encoder", cfg.text_encoder, "text")
    _check_vae(cfg.vae)
    clips = _check_clips(clips_root)
    _check_out(out, cfg)
    return clips
