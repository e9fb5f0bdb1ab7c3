"""Causal 3D VAE (Wan2.1-compatible) with streamed encode/decode.

Video `(B, T, H, W, 3)` float in [-1, 1] with `T = 1 + 4k` <-> latents `(B, 1 + k, H/8, W/8, z)`.

    vae = CausalVAE(VAEConfig.tiny())
    z = vae.encode(video)                # raw posterior mean, streamed (chunks 1, 4, 4, ...)
    zn = vae.normalize(z)                # what the diffusion model sees
    video = vae.decode(vae.denormalize(zn))   # streamed, one latent frame at a time, clamped

Streaming runs ONE step function scanned (`lax.scan`) over fixed-size chunks, each causal
conv carrying the last 2 frames it saw; the streamed result equals the full pass
(`streamed=False`, the one to differentiate through) and its working memory does not grow
with the number of frames. `StreamEncoder` / `StreamDecoder` keep the caches between calls,
so a sampler can decode segment after segment at constant memory.

The layers live in `vae_layers.py`; Wan2.1 safetensors are read by `omnijax.convert`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omnijax import module_io
from omnijax.models.vae_layers import (CausalConv3d, Downsample, MidBlock, RMSNorm, ResBlock,
                                       Upsample, check_conv_impl)

KIND = "vae"

# Wan2.1's per-channel latent statistics (diffusers' AutoencoderKLWan default config).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160)


# --------------------------------------------------------------------------- config

@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Architecture + latent statistics. Presets: `wan21()`, `small()`, `tiny()`."""

    base_dim: int = 96
    decoder_base_dim: int | None = None  # None: same as base_dim
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    # per downsampling stage (len(dim_mult) - 1 of them): also halve time?
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    in_channels: int = 3
    out_channels: int = 3
    # per-channel statistics of raw latents; None = identity (mean 0, std 1)
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    # how the causal convs are computed, never what (same weights): "conv3d", "taps" (2D convs
    # over time-stacked channels, much faster on CPU) or "auto" (taps on CPU, else conv3d)
    conv_impl: str = "auto"

    def __post_init__(self):
        # JSON round trips turn tuples into lists; keep the config hashable.
        for f in ("dim_mult", "temporal_downsample", "latents_mean", "latents_std"):
            v = getattr(self, f)
            if v is not None and not isinstance(v, tuple):
                object.__setattr__(self, f, tuple(v))
        if len(self.temporal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(f"temporal_downsample needs {len(self.dim_mult) - 1} entries "
                             f"(one per downsampling stage), got {self.temporal_downsample}")
        for f in ("latents_mean", "latents_std"):
            v = getattr(self, f)
            if v is not None and len(v) != self.z_dim:
                raise ValueError(f"{f} needs z_dim={self.z_dim} values, got {len(v)}")
        check_conv_impl(self.conv_impl)

    # -- presets: the one place they are defined
    @classmethod
    def wan21(cls) -> "VAEConfig":
        """Exactly Wan2.1's VAE (126,892,531 parameters)."""
        return cls(base_dim=96, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2,
                   temporal_downsample=(False, True, True),
                   latents_mean=WAN21_LATENTS_MEAN, latents_std=WAN21_LATENTS_STD)

    @classmethod
    def small(cls) -> "VAEConfig":
        """Wan2.1's shape at a third of its width: real training on one accelerator."""
        return cls(base_dim=32, z_dim=16, dim_mult=(1, 2, 4, 4), num_res_blocks=2)

    @classmethod
    def tiny(cls) -> "VAEConfig":
        """Same 4x temporal / 8x spatial compression, ~0.2M weights: CPU tests and demos."""
        return cls(base_dim=8, z_dim=16, dim_mult=(1, 2, 2, 2), num_res_blocks=1)

    def replace(self, **fields) -> "VAEConfig":
        """This config with `fields` changed, named in the error when one is unknown."""
        unknown = set(fields) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown VAEConfig fields {sorted(unknown)}; known: "
                             f"{sorted(f.name for f in dataclasses.fields(self))}")
        return dataclasses.replace(self, **fields)

    @classmethod
    def preset(cls, name: str) -> "VAEConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown VAE preset {name!r}; choose from {sorted(PRESETS)}")
        return getattr(cls, name)()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VAEConfig":
        return cls().replace(**d)

    # -- derived sizes
    @property
    def time_factor(self) -> int:
        return 2 ** sum(bool(t) for t in self.temporal_downsample)

    @property
    def space_factor(self) -> int:
        return 2 ** (len(self.dim_mult) - 1)


PRESETS = ("wan21", "small", "tiny")


# --------------------------------------------------------------------------- modules

class Encoder(nnx.Module):
    """Video -> 2 * z_dim channels (mean | logvar) at 1/time_factor, 1/space_factor."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        dims = [cfg.base_dim * m for m in (1, *cfg.dim_mult)]
        impl = cfg.conv_impl
        self.conv_in = CausalConv3d(cfg.in_channels, dims[0], conv_impl=impl, rngs=rngs)
        blocks: list[nnx.Module] = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(cin, cout, conv_impl=impl, rngs=rngs))
                cin = cout
            if i != len(cfg.dim_mult) - 1:
                blocks.append(Downsample(cout, temporal=cfg.temporal_downsample[i],
                                         conv_impl=impl, rngs=rngs))
        self.down_blocks = nnx.List(blocks)
        self.mid_block = MidBlock(dims[-1], conv_impl=impl, rngs=rngs)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], 2 * cfg.z_dim, conv_impl=impl, rngs=rngs)

    def __call__(self, x, cache=None):
        c_in, c_blocks, c_mid, c_out = (None, [None] * len(self.down_blocks), None, None) \
            if cache is None else cache
        x, c_in = self.conv_in(x, c_in)
        new_blocks = []
        for block, c in zip(self.down_blocks, c_blocks):
            x, c = block(x, c)
            new_blocks.append(c)
        x, c_mid = self.mid_block(x, c_mid)
        x, c_out = self.conv_out(jax.nn.silu(self.norm_out(x)), c_out)
        return x, (c_in, new_blocks, c_mid, c_out)


class UpBlock(nnx.Module):
    """num_res_blocks + 1 ResBlocks, then (optionally) an Upsample halving the channels."""

    def __init__(self, cin: int, cout: int, num_res_blocks: int, *, upsample: bool,
                 temporal: bool, conv_impl: str = "auto", rngs: nnx.Rngs):
        resnets = []
        for _ in range(num_res_blocks + 1):
            resnets.append(ResBlock(cin, cout, conv_impl=conv_impl, rngs=rngs))
            cin = cout
        self.resnets = nnx.List(resnets)
        self.upsamplers = nnx.List(
            [Upsample(cout, cout // 2, temporal=temporal, conv_impl=conv_impl, rngs=rngs)]
            if upsample else [])

    def __call__(self, x, cache=None):
        n = len(self.resnets) + len(self.upsamplers)
        caches = [None] * n if cache is None else cache
        new = []
        for layer, c in zip([*self.resnets, *self.upsamplers], caches):
            x, c = layer(x, c)
            new.append(c)
        return x, new


class Decoder(nnx.Module):
    """z_dim channels -> video, mirroring the encoder (temporal upsampling reversed)."""

    def __init__(self, cfg: VAEConfig, *, rngs: nnx.Rngs):
        base = cfg.decoder_base_dim or cfg.base_dim
        mult = cfg.dim_mult
        dims = [base * m for m in (mult[-1], *mult[::-1])]
        temporal_up = cfg.temporal_downsample[::-1]
        impl = cfg.conv_impl
        self.conv_in = CausalConv3d(cfg.z_dim, dims[0], conv_impl=impl, rngs=rngs)
        self.mid_block = MidBlock(dims[0], conv_impl=impl, rngs=rngs)
        blocks = []
        for i, (cin, cout) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                cin //= 2  # the previous Upsample halved the channels (Wan2.1)
            up = i != len(mult) - 1
            blocks.append(UpBlock(cin, cout, cfg.num_res_blocks, upsample=up,
                                  temporal=up and bool(temporal_up[i]), conv_impl=impl,
                                  rngs=rngs))
        self.up_blocks = nnx.List(blocks)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], cfg.out_channels, conv_impl=impl, rngs=rngs)

    def __call__(self, x, cache=None):
        c_in, c_mid, c_blocks, c_out = (None, None, [None] * len(self.up_blocks), None) \
            if cache is None else cache
        x, c_in = self.conv_in(x, c_in)
        x, c_mid = self.mid_block(x, c_mid)
        new_blocks = []
        for block, c in zip(self.up_blocks, c_blocks):
            x, c = block(x, c)
            new_blocks.append(c)
        x, c_out = self.conv_out(jax.nn.silu(self.norm_out(x)), c_out)
        return x, (c_in, c_mid, new_blocks, c_out)


class CausalVAE(nnx.Module):
    """The VAE. Public methods accept NumPy or JAX arrays and check their shapes."""

    def __init__(self, config: VAEConfig, *, rngs: nnx.Rngs | None = None):
        rngs = nnx.Rngs(0) if rngs is None else rngs
        self.config = config
        z = config.z_dim
        self.encoder = Encoder(config, rngs=rngs)
        impl = config.conv_impl
        self.quant_conv = CausalConv3d(2 * z, 2 * z, (1, 1, 1), conv_impl=impl, rngs=rngs)
        self.post_quant_conv = CausalConv3d(z, z, (1, 1, 1), conv_impl=impl, rngs=rngs)
        self.decoder = Decoder(config, rngs=rngs)

    # -- input checks -----------------------------------------------------------------
    def check_video(self, video, *, first: bool = True) -> jax.Array:
        """`video` as a float JAX array after checking `(B, T, H, W, C)`, T = 1 + tf*k."""
        cfg = self.config
        tf, sf = cfg.time_factor, cfg.space_factor
        shape = getattr(video, "shape", None)
        if shape is None or len(shape) != 5:
            raise ValueError(f"video must be (B, T, H, W, {cfg.in_channels}) channels-last, "
                             f"got shape {shape}")
        if not jnp.issubdtype(video.dtype, jnp.floating):
            raise TypeError(f"video must be float in [-1, 1], got dtype {video.dtype} "
                            "(uint8 frames: x / 127.5 - 1)")
        b, t, h, w, c = shape
        if c != cfg.in_channels:
            raise ValueError(f"video must have {cfg.in_channels} channels last, got shape {shape}")
        if first and (t - 1) % tf:
            raise ValueError(f"video needs T = 1 + {tf}k frames, got T={t} (shape {shape})")
        if not first and (t == 0 or t % tf):
            raise ValueError(f"a continued stream needs a multiple of {tf} frames, got T={t}")
        if h % sf or w % sf:
            raise ValueError(f"video H and W must be multiples of {sf}, got {h}x{w}")
        return jnp.asarray(video)

    def check_latents(self, latents) -> jax.Array:
        z = self.config.z_dim
        shape = getattr(latents, "shape", None)
        if shape is None or len(shape) != 5 or shape[-1] != z or shape[1] == 0:
            raise ValueError(f"latents must be (B, F>=1, h, w, {z}) channels-last, got {shape}")
        if not jnp.issubdtype(latents.dtype, jnp.floating):
            raise TypeError(f"latents must be float, got dtype {latents.dtype}")
        return jnp.asarray(latents)

    # -- the math (traceable; no checks, no jit) ----------------------------------------
    def _moments(self, h):
        mean, logvar = jnp.split(self.quant_conv(h)[0], 2, axis=-1)
        return mean, jnp.clip(logvar, -30.0, 20.0)

    def encode_frames(self, video, cache=None):
        """Encoder features of `video`, continuing from `cache` (None: start a sequence).

        A new sequence runs its first frame alone, then scans one step over chunks of
        `time_factor` frames. Returns `(features (B, F, h, w, 2z), cache)`.
        """
        return _stream(self.encoder, video, cache, self.config.time_factor)

    def decode_frames(self, z, cache=None):
        """Video of latents `z`, one latent frame per scanned step, continuing `cache`."""
        return _stream(lambda f, c: self.decoder(self.post_quant_conv(f)[0], c), z, cache, 1)

    def moments(self, video, *, streamed: bool = False):
        """(mean, logvar) of the posterior; traceable, no input checks."""
        h = self.encode_frames(video)[0] if streamed else self.encoder(video)[0]
        return self._moments(h)

    def reconstruct(self, latents, *, streamed: bool = False, clamp: bool = True):
        """Video from raw latents; traceable, no input checks."""
        v = self.decode_frames(latents)[0] if streamed else \
            self.decoder(self.post_quant_conv(latents)[0])[0]
        return jnp.clip(v, -1.0, 1.0) if clamp else v

    # -- public API ---------------------------------------------------------------------
    def encode_distribution(self, video, *, streamed: bool = False):
        """Posterior `(mean, logvar)`, each `(B, F, h, w, z)`; full pass by default, which
        is what a VAE objective differentiates through (works under jit and grad)."""
        video = self.check_video(video)
        return _run(self, "moments", video, streamed=streamed)

    def encode(self, video, *, streamed: bool = True) -> jax.Array:
        """Raw (unnormalised) posterior mean `(B, 1 + k, H/8, W/8, z)`."""
        return self.encode_distribution(video, streamed=streamed)[0]

    def decode(self, latents, *, streamed: bool = True, clamp: bool = True) -> jax.Array:
        """Video `(B, 1 + 4(F-1), 8h, 8w, 3)` from RAW latents, clamped to [-1, 1]."""
        latents = self.check_latents(latents)
        # clamp outside the jitted pass: one compiled program serves both settings
        video = _run(self, "reconstruct", latents, streamed=streamed, clamp=False)
        return jnp.clip(video, -1.0, 1.0) if clamp else video

    def _stats(self, dtype):
        cfg = self.config
        mean = jnp.zeros((cfg.z_dim,), dtype) if cfg.latents_mean is None else \
            jnp.asarray(cfg.latents_mean, dtype)
        std = jnp.ones((cfg.z_dim,), dtype) if cfg.latents_std is None else \
            jnp.asarray(cfg.latents_std, dtype)
        return mean, std

    def normalize(self, latents):
        """Raw latents -> the per-channel standardised space the diffusion model works in."""
        latents = jnp.asarray(latents)
        mean, std = self._stats(latents.dtype)
        return (latents - mean) / std

    def denormalize(self, latents):
        """Inverse of `normalize`."""
        latents = jnp.asarray(latents)
        mean, std = self._stats(latents.dtype)
        return latents * std + mean

    def stream_encoder(self) -> "StreamEncoder":
        return StreamEncoder(self)

    def stream_decoder(self, *, clamp: bool = True) -> "StreamDecoder":
        return StreamDecoder(self, clamp=clamp)


def _stream(step, x, cache, chunk: int):
    """Run `step(frames, cache) -> (out, cache)` causally over the time axis of `x`.

    Without a cache the first frame goes alone (it starts the sequence); the remaining
    frames go `chunk` at a time through ONE `lax.scan`ned step. Chunks are sliced from `x`
    and written into one preallocated output inside the loop, so nothing but the output
    grows with the number of frames (no stacked per-step outputs, no transposed copies).
    """
    first, start = None, 0
    if cache is None:
        first, cache = step(x[:, :1], None)
        start = 1
    n = (x.shape[1] - start) // chunk
    if n == 0:
        return first, cache
    one = jax.eval_shape(lambda c, f: step(f, c)[0], cache, x[:, start:start + chunk])
    per, lead = one.shape[1], (0 if first is None else first.shape[1])
    out = jnp.zeros(one.shape[:1] + (lead + n * per,) + one.shape[2:], one.dtype)
    if first is not None:
        out = jax.lax.dynamic_update_slice_in_dim(out, first, 0, axis=1)

    def body(carry, i):
        cache, out = carry
        frames = jax.lax.dynamic_slice_in_dim(x, start + i * chunk, chunk, axis=1)
        y, cache = step(frames, cache)
        return (cache, jax.lax.dynamic_update_slice_in_dim(out, y, lead + i * per, axis=1)), None

    (cache, out), _ = jax.lax.scan(body, (cache, out), jnp.arange(n))
    return out, cache


# --------------------------------------------------------------------------- jitted entry

@functools.partial(jax.jit, static_argnames=("graphdef", "method", "kwargs"))
def _run_jit(graphdef, state, x, method: str, kwargs: tuple):
    return getattr(nnx.merge(graphdef, state), method)(x, **dict(kwargs))


def _run(vae: CausalVAE, method: str, x, **kwargs):
    graphdef, state = nnx.split(vae)
    return _run_jit(graphdef, state, x, method, tuple(sorted(kwargs.items())))


@functools.partial(jax.jit, static_argnames=("graphdef", "method"))
def _step_jit(graphdef, state, x, cache, method: str):
    return getattr(nnx.merge(graphdef, state), method)(x, cache)


class _Stream:
    """Carries one causal cache between calls; every call is one jitted scan."""

    _method = ""

    def __init__(self, vae: CausalVAE):
        self.vae = vae
        self._graphdef, self._state = nnx.split(vae)
        self.cache = None

    @property
    def started(self) -> bool:
        return self.cache is not None

    def _push(self, x):
        out, self.cache = _step_jit(self._graphdef, self._state, x, self.cache, self._method)
        return out


class StreamEncoder(_Stream):
    """`push(frames)` -> their latent means; first push 1 + 4k frames, then 4k each."""

    _method = "encode_frames"

    def push(self, video) -> jax.Array:
        video = self.vae.check_video(video, first=not self.started)
        return self.vae._moments(self._push(video))[0]


class StreamDecoder(_Stream):
    """`push(latents)` -> their video frames (1 + 4(F-1) on the first push, 4F after)."""

    _method = "decode_frames"

    def __init__(self, vae: CausalVAE, *, clamp: bool = True):
        super().__init__(vae)
        self.clamp = clamp

    def push(self, latents) -> jax.Array:
        video = self._push(self.vae.check_latents(latents))
        return jnp.clip(video, -1.0, 1.0) if self.clamp else video


# --------------------------------------------------------------------------- save / load

def count_params(config: VAEConfig) -> int:
    """Parameter count of a preset without allocating it."""
    abstract = nnx.eval_shape(lambda: CausalVAE(config))
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


def save(path: str | os.PathLike, vae: CausalVAE, *, overwrite: bool = False):
    """Write `vae` as an orbax checkpoint + config.json that `load` reads back."""
    return module_io.save_module(path, vae, vae.config, kind=KIND, overwrite=overwrite)


def load(path: str | os.PathLike) -> CausalVAE:
    """A VAE saved by `save` (or by `omnijax convert wan-vae`)."""
    return module_io.load_module(path, lambda cfg: CausalVAE(VAEConfig.from_dict(cfg)), kind=KIND)


def frames_for_latents(num_latent_frames: int, config: VAEConfig) -> int:
    """Video frames that decode from `num_latent_frames` latent frames."""
    return 1 + config.time_factor * (num_latent_frames - 1)


def latent_shape(video_shape: Sequence[int], config: VAEConfig) -> tuple[int, ...]:
    """Latent shape `(B, F, h, w, z)` for a video shape `(B, T, H, W, C)`."""
    b, t, h, w, _ = video_shape
    sf = config.space_factor
    return (b, 1 + (t - 1) // config.time_factor, h // sf, w // sf, config.z_dim)
