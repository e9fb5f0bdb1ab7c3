"""`omnijax convert`: pretrained safetensors -> our NNX modules / orbax checkpoints.

    omnijax convert wan-vae  SRC DST   # diffusers AutoencoderKLWan dir -> omnijax VAE checkpoint
    omnijax convert wav2vec2 SRC DST   # HF Wav2Vec2Model dir -> omnijax encoder checkpoint
    omnijax convert t5       SRC DST   # HF T5EncoderModel dir -> omnijax encoder checkpoint

`SRC` for wan-vae is what `AutoencoderKLWan.save_pretrained(SRC)` writes (e.g. the `vae/`
folder of `Wan-AI/Wan2.1-T2V-1.3B-Diffusers`): `config.json` +
`diffusion_pytorch_model.safetensors`. Only safetensors are read; pickled weights (`*.bin`,
`*.pth`, `*.pt`, `*.ckpt`) are refused because unpickling can run arbitrary code.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

WAN_WEIGHTS = "diffusion_pytorch_model.safetensors"
WAN_INDEX = "diffusion_pytorch_model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt", ".pkl")

_TO_SAFETENSORS = (
    "make safetensors first (in a trusted environment): "
    "python -c \"from diffusers import AutoencoderKLWan as A; "
    "A.from_pretrained('SRC').save_pretrained('OUT', safe_serialization=True)\"  "
    "or, for a bare state dict: python -c \"import torch, safetensors.torch as s; "
    "s.save_file(torch.load('FILE', weights_only=True), 'OUT/diffusion_pytorch_model.safetensors')\"")


class ConversionError(ValueError):
    """A checkpoint that cannot be mapped onto our modules; the message says why."""


# --------------------------------------------------------------------------- reading

def _refuse_pickle(path: str):
    raise ConversionError(f"{path}: refusing to read pickled weights (unpickling can run code); "
                          + _TO_SAFETENSORS)


def _wan_dir(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if os.path.isfile(path):
        if path.endswith(PICKLE_SUFFIXES):
            _refuse_pickle(path)
        if path.endswith(".safetensors"):
            return os.path.dirname(os.path.abspath(path))
        raise ConversionError(f"{path}: expected a diffusers VAE directory "
                              f"(config.json + {WAN_WEIGHTS})")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: no such directory")
    return path


def _read_safetensors(directory: str) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    single = os.path.join(directory, WAN_WEIGHTS)
    index = os.path.join(directory, WAN_INDEX)
    if os.path.isfile(single):
        return load_file(single)
    if os.path.isfile(index):
        with open(index) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        tensors: dict[str, np.ndarray] = {}
        for shard in shards:
            tensors.update(load_file(os.path.join(directory, shard)))
        return tensors
    pickles = [p for p in glob.glob(os.path.join(directory, "*")) if p.endswith(PICKLE_SUFFIXES)]
    if pickles:
        _refuse_pickle(pickles[0])
    found = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    if len(found) == 1:
        return load_file(found[0])
    raise ConversionError(f"{directory}: no {WAN_WEIGHTS} (found {[os.path.basename(p) for p in found]})")


# --------------------------------------------------------------------------- wan vae

def wan_config(diffusers_config: dict[str, Any], *, source: str = "config.json"):
    """Map diffusers' AutoencoderKLWan config.json onto `VAEConfig`, naming what we lack."""
    from omnijax.models.vae import VAEConfig

    c = dict(diffusers_config)
    cls = c.get("_class_name")
    if cls is not None and cls != "AutoencoderKLWan":
        raise ConversionError(f"{source}: _class_name is {cls!r}, expected 'AutoencoderKLWan'")
    unsupported = []
    if c.get("is_residual", False):
        unsupported.append("is_residual=True (the Wan2.2 VAE)")
    if c.get("patch_size") not in (None, 1):
        unsupported.append(f"patch_size={c['patch_size']} (the Wan2.2 VAE)")
    if c.get("attn_scales", []):
        unsupported.append(f"attn_scales={c['attn_scales']} (Wan2.1 has no attention outside the mid block)")
    if unsupported:
        raise ConversionError(f"{source}: unsupported AutoencoderKLWan settings: {'; '.join(unsupported)}")
    try:
        cfg = VAEConfig(
            base_dim=int(c.get("base_dim", 96)),
            decoder_base_dim=c.get("decoder_base_dim"),
            z_dim=int(c.get("z_dim", 16)),
            dim_mult=tuple(c.get("dim_mult", (1, 2, 4, 4))),
            num_res_blocks=int(c.get("num_res_blocks", 2)),
            temporal_downsample=tuple(bool(t) for t in c.get("temperal_downsample", (False, True, True))),
            in_channels=int(c.get("in_channels", 3)),
            out_channels=int(c.get("out_channels", 3)),
            latents_mean=tuple(c["latents_mean"]) if c.get("latents_mean") is not None else None,
            latents_std=tuple(c["latents_std"]) if c.get("latents_std") is not None else None,
        )
    except ValueError as e:
        raise ConversionError(f"{source}: {e}") from None
    for key, ours in (("scale_factor_temporal", cfg.time_factor), ("scale_factor_spatial", cfg.space_factor)):
        if c.get(key) is not None and int(c[key]) != ours:
            raise ConversionError(f"{source}: {key}={c[key]} disagrees with the architecture ({ours})")
    return cfg


def _torch_key(path: tuple) -> str:
    """Our parameter path -> diffusers' state-dict key (the module trees mirror each other)."""
    parts = [str(p) for p in path]
    leaf = parts[-1]
    parts[-1] = {"kernel": "weight", "bias": "bias", "gamma": "gamma"}[leaf]
    # Wan's spatial resample is nn.Sequential(pad-or-upsample, Conv2d): the conv is index 1.
    if len(parts) >= 2 and parts[-2] == "resample":
        parts.insert(len(parts) - 1, "1")
    return ".".join(parts)


def _to_ours(name: str, w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """PyTorch layout -> ours: conv weights (O, I, k...) -> (k..., I, O), norms flattened."""
    if w.ndim == 5:
        w = w.transpose(2, 3, 4, 1, 0)
    elif w.ndim == 4:
        w = w.transpose(2, 3, 1, 0)
        if len(shape) == 2:  # a 1x1 Conv2d held as a dense layer
            w = w.reshape(w.shape[-2:])
    elif w.ndim == 2:
        w = w.T
    if w.ndim != len(shape) and w.size == int(np.prod(shape)):
        w = w.reshape(shape)  # RMS gamma (C, 1, 1[, 1]) -> (C,)
    if tuple(w.shape) != tuple(shape):
        raise ConversionError(f"{name}: shape {tuple(w.shape)} does not fit ours {tuple(shape)}")
    return w


def load_wan_vae(path: str | os.PathLike, *, dtype=jnp.float32):
    """A `CausalVAE` holding the weights of a diffusers-format AutoencoderKLWan directory."""
    from omnijax.models.vae import CausalVAE

    directory = _wan_dir(path)
    cfg_file = os.path.join(directory, "config.json")
    if not os.path.isfile(cfg_file):
        raise ConversionError(f"{directory}: no config.json (write it with AutoencoderKLWan.save_pretrained)")
    with open(cfg_file) as f:
        try:
            config = wan_config(json.load(f), source=cfg_file)
        except json.JSONDecodeError as e:
            raise ConversionError(f"{cfg_file}: not valid JSON: {e}") from None
    tensors = _read_safetensors(directory)

    abstract = nnx.eval_shape(lambda: CausalVAE(config))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    flat = nnx.to_flat_state(params)
    used, missing, misfit, values = set(), [], [], []
    for path_, var in flat:
        key = _torch_key(path_)
        if key not in tensors:
            missing.append(key)
            values.append(None)
            continue
        used.add(key)
        try:
            values.append(_to_ours(key, np.asarray(tensors[key]), var.value.shape))
        except ConversionError as e:
            misfit.append(str(e))
            values.append(None)
    unexpected = sorted(set(tensors) - used)
    if missing or unexpected or misfit:
        def show(items):
            return f"{items[:6]}{' ...' if len(items) > 6 else ''} ({len(items)})"
        raise ConversionError(
            f"{directory}: the weights do not match the architecture in config.json "
            f"({config}): missing {show(missing)}, unexpected {show(unexpected)}, "
            f"wrong shape {show(misfit)}")
    for (_, var), value in zip(flat, values):
        var.value = jnp.asarray(value, dtype)
    params = nnx.from_flat_state(flat)
    return nnx.merge(graphdef, params, rest)


def convert_wan_vae(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False):
    """diffusers AutoencoderKLWan dir -> omnijax VAE checkpoint readable by `vae.load(dst)`."""
    from omnijax.models import vae as vae_lib

    vae = load_wan_vae(src)
    return vae_lib.save(dst, vae, overwrite=overwrite)


# --------------------------------------------------------------------------- CLI

def _wan(args) -> int:
    out = convert_wan_vae(args.src, args.dst, overwrite=args.overwrite)
    from omnijax.models.vae import count_params, load

    n = count_params(load(out).config)
    print(f"wrote {out} ({n:,} parameters); load it with omnijax.models.vae.load({str(out)!r})")
    return 0


def _encoder(module: str):
    def handler(args) -> int:
        import importlib

        convert_to_orbax = importlib.import_module(module).convert_to_orbax
        out = convert_to_orbax(args.src, args.dst, overwrite=args.overwrite)
        print(f"wrote {out if out is not None else args.dst}")
        return 0
    return handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="omnijax convert", description="Convert safetensors checkpoints to omnijax orbax checkpoints.")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("wan-vae", help="diffusers AutoencoderKLWan directory (config.json + safetensors)")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    p.set_defaults(run=_wan)
    for name, module, what in (("wav2vec2", "omnijax.models.encoders.wav2vec2", "HF Wav2Vec2Model"),
                               ("t5", "omnijax.models.encoders.t5", "HF T5EncoderModel")):
        p = sub.add_parser(name, help=f"{what} directory (config.json + model.safetensors)")
        p.add_argument("src")
        p.add_argument("dst")
        p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
        p.set_defaults(run=_encoder(module))
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:  # ConversionError is a ValueError
        print(f"omnijax convert {args.what}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
