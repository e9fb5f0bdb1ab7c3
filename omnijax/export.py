"""`omnijax export`: a training run -> a self-describing inference directory.

    omnijax export --ckpt runs/s3 --out models/s3 [--dtype bfloat16] [--serialize]
    omnijax export --ckpt runs/vae --out models/vae          # a VAE run -> a VAE directory

MMDiT runs become an export directory (format in `omnijax.sample.bundle`): the EMA weights
(or `--weights params`) with LoRA adapters merged into the frozen backbone, cast to
`--dtype`; the VAE that made the cached latents and the encoder specs, both read from the
preprocess manifest the run trained on (encoder weights copied when the spec names a
directory); the recipe the checkpoint recorded (flow shift, latent shape, motion frames);
the sampler defaults of the run's config; the stage and its conditions; the source step.
`--serialize` adds the segment program through `jax.export` (`omnijax.sample.serialized`).

VAE runs become a VAE directory that `omnijax preprocess --vae` and the sampler read: the
EMA (or raw) weights, and per-channel latent statistics measured on SynthTalk clips of the
run's shape when the preset has none (the diffusion model wants standardised latents).

Nothing is written until every input is validated; the output is built under a temporary
name and renamed whole, and an existing `--out` is never touched.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from typing import Any

import numpy as np

from omnijax.errors import ArgumentParser, UsageError
from omnijax.models.conditions import CONDITIONS
from omnijax.sample import bundle as bundle_lib

log = logging.getLogger(__name__)

DTYPES = ("bfloat16", "float32", "float16")
DEFAULT_SAMPLER = {"solver": "unipc", "steps": 20, "cfg_text": [3.0, 3.0], "cfg_audio": [6.0, 3.0],
                   "schedule": "linear"}


# ----------------------------------------------------------------------------- reading a run

@dataclasses.dataclass
class Run:
    directory: str
    step: int
    config: dict[str, Any]


def open_run(path: str, step: int | None = None) -> Run:
    """The run at `path` (a workdir or its checkpoints/ folder) and its checkpoint config."""
    from omnijax.train import checkpoint as ckpt_lib

    if not os.path.isdir(path):
        raise UsageError(f"--ckpt {path!r}: no such directory (expected a training workdir)")
    root = path[:-len("checkpoints")].rstrip("/") if path.rstrip("/").endswith("checkpoints") else path
    if not os.path.isdir(os.path.join(root, "checkpoints")):
        raise UsageError(f"--ckpt {path!r} has no checkpoints/ folder: is it a training workdir?")
    ck = ckpt_lib.Checkpointer(os.path.join(root, "checkpoints"))
    try:
        steps = ck.all_steps()
        if not steps:
            raise UsageError(f"--ckpt {path!r}: no finished checkpoint under checkpoints/")
        if step is not None and step not in steps:
            raise UsageError(f"--step {step}: not among the checkpoints of {path!r} ({steps})")
        step = max(steps) if step is None else step
        config = ck.restore_config(step)
    finally:
        ck.close()
    return Run(os.path.abspath(root), int(step), config)


def _restore_model(run: Run, weights: str):
    """The trained module (EMA or params) on the host, LoRA adapters merged."""
    import jax
    import ml_collections
    from flax import nnx

    from omnijax.models import lora
    from omnijax.train import checkpoint as ckpt_lib
    from omnijax.train import objectives
    from omnijax.train.state import build_abstract

    cfg = ml_collections.ConfigDict(run.config)
    objective = objectives.build(cfg)
    graphdef, params_abs, frozen_abs = build_abstract(objective.model_fn, objective.trainable)
    dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = lambda tree: jax.tree.map(  # noqa: E731
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=dev), tree)
    want = {weights: target(params_abs)}
    if jax.tree.leaves(frozen_abs):
        want["frozen"] = target(frozen_abs)
    got = ckpt_lib.restore_subset(run.directory, want, run.step)
    model = nnx.merge(graphdef, got[weights], got.get("frozen", frozen_abs))
    lora_merged = any(isinstance(m, lora.LoRALinear) for _, m in nnx.iter_modules(model))
    return lora.merge_lora(model), objective, cfg, lora_merged


def _cast_module(model, config):
    """`model`'s weights in a fresh module built from `config`, cast to its dtypes. Matched
    by path: the trained module's variables may carry other metadata (sharding flags)."""
    import jax.numpy as jnp
    from flax import nnx

    abstract = nnx.eval_shape(lambda: type(model)(config, rngs=nnx.Rngs(0)))
    graphdef, target = nnx.split(abstract)
    values = {tuple(p): v.get_value() for p, v in nnx.state(model).flat_state()}
    flat = [(path, var.replace(jnp.asarray(values[tuple(path)], var.get_value().dtype)))
            for path, var in target.flat_state()]
    return nnx.merge(graphdef, nnx.State.from_flat_path(flat))


# ----------------------------------------------------------------------------- what the run trained on

def _manifest(cfg) -> dict | None:
    data = cfg.get("data", {})
    if data.get("source") != "shards" or not data.get("path"):
        return None
    from omnijax.data.preprocess import read_manifest
    try:
        return read_manifest(str(data["path"]))
    except FileNotFoundError:
        return None


def _vae_source(cfg, manifest, vae_arg: str | None) -> tuple[str, int]:
    """(a VAE directory or preset name, its seed) for the run's latents."""
    from omnijax.models.vae import PRESETS
    if vae_arg:
        if not (os.path.isdir(vae_arg) or vae_arg in PRESETS):
            raise UsageError(f"--vae {vae_arg!r}: neither a VAE directory nor a preset ({', '.join(PRESETS)})")
        return vae_arg, 0
    if manifest is None:
        raise UsageError("the run did not train on preprocessed shards whose manifest can be read "
                         f"(data.path={cfg.get('data', {}).get('path')!r}); pass --vae DIR|PRESET "
                         "naming the VAE whose latents it learned")
    enc = manifest["encoders"]
    vae = str(enc["vae"])
    if not (os.path.isdir(vae) or vae in PRESETS):
        raise UsageError(f"the preprocess manifest names VAE {vae!r}, which is no longer a directory; "
                         "pass --vae DIR")
    return vae, int(enc.get("vae_seed", 0))


def _copy_encoder(spec: str, kind: str, out: str) -> str:
    """Copy the weights a spec names into out/encoders/<kind>/; -> the spec, path relative."""
    name, sep, rest = spec.partition(":")
    if not sep or not rest or "=" in rest.split(":")[0]:
        return spec
    path, sep2, options = rest.partition(":")
    if not os.path.isdir(path):
        raise UsageError(f"{kind} encoder spec {spec!r}: {path!r} is not a directory")
    dst = os.path.join(out, "encoders", kind)
    shutil.copytree(path, dst)
    return f"{name}:encoders/{kind}" + (f":{options}" if sep2 else "")


# ----------------------------------------------------------------------------- writers

def _tmp_for(out: str) -> str:
    parent = os.path.dirname(os.path.abspath(out)) or "."
    return os.path.join(parent, f".{os.path.basename(os.path.abspath(out))}.tmp-{os.getpid()}")


def _check_out(out: str) -> None:
    if os.path.exists(out):
        raise UsageError(f"--out {out!r} already exists; exports never overwrite (choose a new path)")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UsageError(f"--out {out!r}: parent directory {parent!r} does not exist")


def export_mmdit(run: Run, out: str, *, dtype: str = "bfloat16", weights: str = "ema",
                 vae: str | None = None, audio_encoder: str | None = None,
                 text_encoder: str | None = None, serialize: bool = False) -> str:
    from omnijax.data.preprocess import build_vae
    from omnijax.models import mmdit as mmdit_lib
    from omnijax.models import vae as vae_lib

    cfg_dict = run.config
    import ml_collections
    cfg = ml_collections.ConfigDict(cfg_dict)
    manifest = _manifest(cfg)
    vae_src, vae_seed = _vae_source(cfg, manifest, vae)
    enc = (manifest or {}).get("encoders", {})
    audio_spec = audio_encoder or enc.get("audio", "mel")
    text_spec = text_encoder or enc.get("text", "bytes")
    pre = (manifest or {}).get("config", {})
    recipe = dict(cfg_dict.get("recipe") or {})
    if "flow_shift" not in recipe:
        raise UsageError(f"--ckpt {run.directory!r}: its checkpoint records no recipe (flow shift); "
                         "it was trained before recipes were recorded, retrain or re-save it")

    model, objective, _, lora_merged = _restore_model(run, weights)
    config = dataclasses.replace(model.config, param_dtype=dtype, dtype=dtype, remat="none")
    exported = _cast_module(model, config)

    tmp = _tmp_for(out)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        mmdit_lib.save(os.path.join(tmp, "mmdit"), exported)
        if os.path.isdir(vae_src):
            shutil.copytree(vae_src, os.path.join(tmp, "vae"))
        else:
            vae_lib.save(os.path.join(tmp, "vae"), build_vae(vae_src, vae_seed))
        audio_spec = _copy_encoder(audio_spec, "audio", tmp)
        text_spec = _copy_encoder(text_spec, "text", tmp)
        metrics = os.path.join(run.directory, "metrics.jsonl")
        if os.path.exists(metrics):
            os.makedirs(os.path.join(tmp, "curves"))
            shutil.copy(metrics, os.path.join(tmp, "curves", "metrics.jsonl"))
        ratios = recipe.get("keep_ratios") or dict(cfg_dict.get("curriculum", {}).get("ratios", {}))
        mc = exported.config
        F, h, w = recipe["latent_frames"], recipe["latent_height"], recipe["latent_width"]
        meta = {
            "format": bundle_lib.FORMAT, "version": bundle_lib.VERSION, "kind": "mmdit",
            "recipe": recipe,
            "video": {"fps": float(pre.get("fps", 25.0)), "height": 8 * h, "width": 8 * w,
                      "frames_per_segment": 1 + 4 * (F - 1), "motion_video_frames": 5,
                      "sample_rate": 16000},
            "pose": {"scale": float(mc.pose_scale), "sigma": float(mc.pose_sigma)},
            "encoders": {"audio": audio_spec, "text": text_spec},
            "sampler": {**DEFAULT_SAMPLER, **dict(cfg_dict.get("sample") or {})},
            "conditions": [c for c in CONDITIONS if ratios.get(c, 0) > 0],
            "stage": recipe.get("stage"),
            "text_len": int(cfg_dict.get("data", {}).get("text_len", 64)),
            "dtype": dtype,
            "source": {"checkpoint": run.directory, "step": run.step, "weights": weights,
                       "lora_merged": lora_merged, "objective": objective.name},
        }
        with open(os.path.join(tmp, bundle_lib.META), "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True, default=_jsonable)
        if serialize:
            from omnijax.sample import serialized
            serialized.write(tmp)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def measure_latent_stats(vae, *, frames: int, height: int, width: int, clips: int = 16,
                         seed: int = 1234, batch: int = 4, framing: str = "full",
                         mouth_scale: float = 1.0) -> tuple[list[float], list[float]]:
    """Per-channel mean / std of the posterior mean over SynthTalk clips of the run's shape
    and framing (a seed the run never trained on)."""
    from omnijax.data import synthetic_batches as data_lib
    make = data_lib.synthtalk_videos(seed=seed, batch=batch, frames=frames, height=height, width=width,
                                     framing=framing, mouth_scale=mouth_scale)
    zs = [np.asarray(vae.encode(make(i)["video"])) for i in range(max(1, clips // batch))]
    z = np.concatenate(zs).reshape(-1, zs[0].shape[-1]).astype(np.float64)
    return [float(v) for v in z.mean(0)], [float(max(v, 1e-6)) for v in z.std(0)]


def export_vae(run: Run, out: str, *, weights: str = "ema", stats_clips: int = 16) -> str:
    from omnijax.models import vae as vae_lib

    model, objective, cfg, _ = _restore_model(run, weights)
    config = model.config
    measured = None
    if config.latents_mean is None:
        d = cfg.get("data", {})
        mean, std = measure_latent_stats(model, frames=objective.T, height=objective.H,
                                         width=objective.W, clips=stats_clips,
                                         framing=str(d.get("framing", "full")),
                                         mouth_scale=float(d.get("mouth_scale", 1.0)))
        config = dataclasses.replace(config, latents_mean=tuple(mean), latents_std=tuple(std))
        measured = {"clips": stats_clips, "frames": objective.T, "height": objective.H,
                    "width": objective.W}
    exported = _cast_module(model, config)
    tmp = _tmp_for(out)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        vae_lib.save(tmp, exported)
        meta = {"format": bundle_lib.FORMAT, "version": bundle_lib.VERSION, "kind": "vae",
                "latent_stats_measured_on": measured,
                "source": {"checkpoint": run.directory, "step": run.step, "weights": weights}}
        with open(os.path.join(tmp, bundle_lib.META), "w") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def export(ckpt: str, out: str, *, step: int | None = None, **kw) -> str:
    """Export the run at `ckpt` to `out` (an MMDiT or a VAE run, by its config)."""
    _check_out(out)
    run = open_run(ckpt, step)
    objective = run.config.get("objective")
    if objective == "vae":
        kw.pop("dtype", None)
        for k in ("vae", "audio_encoder", "text_encoder", "serialize"):
            if kw.pop(k, None):
                raise UsageError(f"--{k.replace('_', '-')} applies to MMDiT exports; {ckpt!r} is a VAE run")
        return export_vae(run, out, **kw)
    if objective != "mmdit":
        raise UsageError(f"--ckpt {ckpt!r}: objective {objective!r} cannot be exported (mmdit | vae)")
    return export_mmdit(run, out, **kw)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="omnijax export", description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="training workdir (its checkpoints/ are read)")
    p.add_argument("--out", required=True, help="new directory to write (never overwritten)")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.add_argument("--weights", choices=("ema", "params"), default="ema")
    p.add_argument("--dtype", choices=DTYPES, default="bfloat16", help="MMDiT parameter dtype")
    p.add_argument("--vae", default=None, help="VAE directory or preset, when the run's manifest cannot say")
    p.add_argument("--audio-encoder", default=None, help="override the manifest's audio encoder spec")
    p.add_argument("--text-encoder", default=None, help="override the manifest's text encoder spec")
    p.add_argument("--serialize", action="store_true", help="also write the segment program (jax.export)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for name in ("absl", "orbax", "jax._src"):
        logging.getLogger(name).setLevel(logging.WARNING)
    kw = dict(step=a.step, weights=a.weights, dtype=a.dtype, vae=a.vae, audio_encoder=a.audio_encoder,
              text_encoder=a.text_encoder, serialize=a.serialize)
    out = export(a.ckpt, a.out, **kw)
    print(f"exported {a.ckpt} -> {out}")
    return 0
