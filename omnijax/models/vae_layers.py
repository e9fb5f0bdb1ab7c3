"""Building blocks of the causal 3D VAE (channels-last, `(B, T, H, W, C)`).

Every block that mixes frames does so only through a *causal* temporal convolution, and
every block takes an optional `cache` and returns `(output, new_cache)`:

* `cache=None` means "this call starts the sequence": the past is zeros (or, for the
  temporal resamplers, the first frame is passed through untouched, as Wan2.1 does). Run
  on a whole video this is the full (non-streamed) forward pass.
* a cache from the previous call means "continue the sequence": the conv sees the last
  frames of the previous chunk instead of zeros.

Because the `cache=None` call also returns a cache, the streamed encode/decode is simply
"first chunk with no cache, every later chunk with the cache the previous one returned",
and it equals the full pass exactly (up to float summation order). Normalisation is per
frame over channels (RMS) and attention is per frame, so nothing else sees across time.

Caches hold the last `CACHE_T = 2` inputs of each 3-tap causal conv (1 for the stride-2
temporal downsampler, which only ever needs the previous frame).

Every causal conv has two formulations with the same weights (`conv_impl`): one `conv3d`,
or "taps": the k_t time taps stacked on channels and ONE 2D conv over all output frames
(see `_conv_taps` for why that is faster on CPU). "auto" picks per backend.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

CACHE_T = 2  # frames of past input a 3-tap causal conv needs
CONV_IMPLS = ("auto", "conv3d", "taps")


def _init(key, shape, dtype=jnp.float32):
    """LeCun-normal weights (std 1/sqrt(fan_in)), drawn with NumPy when the key is concrete.

    jax.random compiles one threefry kernel per weight shape, several seconds each for 5D
    shapes on CPU: an eager build of the VAE took minutes. NumPy draws from a seed taken
    from the JAX key, so the build stays deterministic in `rngs`. Under tracing
    (`nnx.eval_shape`, init inside jit) the JAX initialiser is used.
    """
    fan_in = int(np.prod(shape[:-1]))
    try:
        seed = np.asarray(jax.random.key_data(key)).ravel()
    except jax.errors.TracerArrayConversionError:
        return jax.random.normal(key, shape, dtype) / np.sqrt(fan_in).astype(dtype)
    draw = np.random.default_rng(seed.astype(np.uint64)).standard_normal(shape, dtype=np.float32)
    return jnp.asarray(draw / np.sqrt(fan_in), dtype)


def check_conv_impl(conv_impl: str) -> str:
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
    return conv_impl


def resolve_conv_impl(conv_impl: str) -> str:
    """"auto" -> the formulation for the default backend, read when the conv is traced.

    CPU: "taps", 2-15x faster than XLA's CPU conv3d per layer, forward and backward, and
    1.6-5x on the whole VAE (bench/vae.py; a loaded 2-core machine). Elsewhere: "conv3d",
    as cuDNN and TPUs have native 3D convs; that choice is UNMEASURED, so compare both with
    bench/vae.py before relying on it.
    """
    if check_conv_impl(conv_impl) == "auto":
        return "taps" if jax.default_backend() == "cpu" else "conv3d"
    return conv_impl


def _conv(x, kernel, bias, *, conv_impl: str, t_stride: int = 1):
    """Causal conv body: "valid" in time (`x` already carries its past), "same" in space.

    `x` (B, T, H, W, Cin), `kernel` (kt, kh, kw, Cin, Cout) -> (B, (T - kt) // t_stride + 1,
    H, W, Cout). Both formulations compute the same sum, so they agree to float rounding.
    """
    if resolve_conv_impl(conv_impl) == "taps":
        return _conv_taps(x, kernel, t_stride) + bias
    kh, kw = kernel.shape[1:3]
    y = jax.lax.conv_general_dilated(
        x, kernel, window_strides=(t_stride, 1, 1),
        padding=((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)),
        dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))
    return y + bias


def _conv_taps(x, kernel, t_stride: int):
    """The 3D conv as ONE 2D conv: output frame t = sum_k conv2d(x[t * s + k], kernel[k]).

    Why (measured, bench/vae.py): XLA's CPU backend runs 2D NHWC convs far faster than its
    conv3d, and the gap is wider in the backward pass (the stride-2 temporal conv's
    gradient ~10x). Stacking the kt frames each output frame sees on the channel axis
    (tap-major, so the kernel is a free reshape of the stored one) makes the sum over taps
    part of the conv's contraction: one (kh*kw*kt*Cin)-deep product instead of a shallow
    one, which matters most at the VAE's narrow 8-32 channels. It beat both alternatives
    tried: kt separate 2D convs summed (~1.8x slower on the tiny train step), and one 2D
    conv with the taps as output channels, shifted and summed. Cost: a kt-times copy of the
    conv input (kept for the backward pass; ~2x XLA temporaries in the streamed passes).
    A 1x1 spatial kernel (temporal-only or pointwise conv) is a plain matmul over channels.
    """
    kt, kh, kw, cin, cout = kernel.shape
    b, t, h, w = x.shape[:4]
    t_out = (t - kt) // t_stride + 1
    taps = [jax.lax.slice_in_dim(x, k, k + t_stride * (t_out - 1) + 1, t_stride, axis=1)
            for k in range(kt)]
    stacked = taps[0] if kt == 1 else jnp.concatenate(taps, axis=-1)  # (B, T', H, W, kt*Cin)
    # (kt, kh, kw, Cin, Cout) -> (kh, kw, kt*Cin, Cout): channel index k*Cin + c, as stacked
    k2d = jnp.moveaxis(kernel, 0, 2).reshape(kh, kw, kt * cin, cout)
    if kh == kw == 1:
        return jnp.einsum("bthwc,cd->bthwd", stacked, k2d[0, 0])
    y = jax.lax.conv_general_dilated(
        stacked.reshape(b * t_out, h, w, kt * cin), k2d, window_strides=(1, 1),
        padding=((kh // 2, kh // 2), (kw // 2, kw // 2)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y.reshape(b, t_out, h, w, cout)


def _with_past(x, cache, frames: int):
    """`x` with `frames` frames of past in front: the cache, or zeros at the start."""
    if cache is None:
        past = jnp.zeros(x.shape[:1] + (frames,) + x.shape[2:], x.dtype)
    else:
        past = cache
    return jnp.concatenate([past, x], axis=1)


class CausalConv3d(nnx.Module):
    """3D conv that pads time on the left only, so output frame t sees input frames <= t.

    Kernels of temporal size 1 need no cache (they return `None`); size-3 kernels carry the
    last 2 input frames. Spatial padding is symmetric ("same"). `conv_impl` only chooses how
    the conv is computed (module docstring); the weights are the same either way.
    """

    def __init__(self, cin: int, cout: int, kernel=(3, 3, 3), *, conv_impl: str = "auto",
                 rngs: nnx.Rngs):
        kt, kh, kw = kernel
        self.kernel_size = (kt, kh, kw)
        self.conv_impl = check_conv_impl(conv_impl)
        self.kernel = nnx.Param(_init(rngs.params(), (kt, kh, kw, cin, cout), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))

    def conv(self, x, *, t_stride: int = 1):
        """The conv alone: `x` already holds its past frames (no padding, no cache)."""
        return _conv(x, self.kernel[...], self.bias[...], conv_impl=self.conv_impl,
                     t_stride=t_stride)

    def __call__(self, x, cache=None):
        kt = self.kernel_size[0]
        if kt == 1:
            return self.conv(x), None
        xp = _with_past(x, cache, kt - 1)
        return self.conv(xp), xp[:, -(kt - 1):]


class SpatialConv(nnx.Module):
    """2D conv applied to every frame independently (Wan's Resample convs)."""

    def __init__(self, cin: int, cout: int, *, stride: int = 1, rngs: nnx.Rngs):
        self.stride = stride
        self.kernel = nnx.Param(_init(rngs.params(), (3, 3, cin, cout), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))

    def __call__(self, x):
        # stride 2 is Wan's downsampler: pad right/bottom by one, then a "valid" conv.
        pad = ((0, 1), (0, 1)) if self.stride == 2 else ((1, 1), (1, 1))
        b, t = x.shape[:2]
        y = jax.lax.conv_general_dilated(
            x.reshape((b * t,) + x.shape[2:]), self.kernel[...], (self.stride,) * 2, pad,
            dimension_numbers=("NHWC", "HWIO", "NHWC")) + self.bias[...]
        return y.reshape((b, t) + y.shape[1:])


class RMSNorm(nnx.Module):
    """x / ||x||_channels * sqrt(C) * gamma, per pixel and frame (never across time)."""

    def __init__(self, dim: int):
        self.scale = dim ** 0.5
        self.gamma = nnx.Param(jnp.ones((dim,), jnp.float32))

    def __call__(self, x):
        norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
        # same epsilon as torch.nn.functional.normalize, so all-zero pixels stay zero
        return x / jnp.maximum(norm, 1e-12) * self.scale * self.gamma[...]


class ResBlock(nnx.Module):
    """RMSNorm -> SiLU -> causal conv, twice, plus a (1x1x1 conv) shortcut."""

    def __init__(self, cin: int, cout: int, *, conv_impl: str = "auto", rngs: nnx.Rngs):
        self.norm1 = RMSNorm(cin)
        self.conv1 = CausalConv3d(cin, cout, conv_impl=conv_impl, rngs=rngs)
        self.norm2 = RMSNorm(cout)
        self.conv2 = CausalConv3d(cout, cout, conv_impl=conv_impl, rngs=rngs)
        self.conv_shortcut = (CausalConv3d(cin, cout, (1, 1, 1), conv_impl=conv_impl, rngs=rngs)
                              if cin != cout else None)

    def __call__(self, x, cache=None):
        c1, c2 = (None, None) if cache is None else cache
        h = x if self.conv_shortcut is None else self.conv_shortcut(x)[0]
        x, c1 = self.conv1(jax.nn.silu(self.norm1(x)), c1)
        x, c2 = self.conv2(jax.nn.silu(self.norm2(x)), c2)
        return x + h, (c1, c2)


class FrameAttention(nnx.Module):
    """Single-head self-attention over the pixels of each frame (the mid block's)."""

    def __init__(self, dim: int, *, rngs: nnx.Rngs):
        self.norm = RMSNorm(dim)
        self.to_qkv = nnx.Linear(dim, 3 * dim, kernel_init=_init, rngs=rngs)
        self.proj = nnx.Linear(dim, dim, kernel_init=_init, rngs=rngs)

    def __call__(self, x):
        b, t, h, w, c = x.shape
        tokens = self.norm(x).reshape(b * t, h * w, c)
        q, k, v = jnp.split(self.to_qkv(tokens), 3, axis=-1)
        logits = jnp.einsum("bqc,bkc->bqk", q, k) / jnp.sqrt(jnp.float32(c)).astype(x.dtype)
        out = jnp.einsum("bqk,bkc->bqc", jax.nn.softmax(logits, axis=-1), v)
        return x + self.proj(out).reshape(b, t, h, w, c)


class MidBlock(nnx.Module):
    """ResBlock -> frame attention -> ResBlock at the lowest resolution."""

    def __init__(self, dim: int, *, conv_impl: str = "auto", rngs: nnx.Rngs):
        self.resnets = nnx.List([ResBlock(dim, dim, conv_impl=conv_impl, rngs=rngs)
                                 for _ in range(2)])
        self.attentions = nnx.List([FrameAttention(dim, rngs=rngs)])

    def __call__(self, x, cache=None):
        c0, c1 = (None, None) if cache is None else cache
        x, c0 = self.resnets[0](x, c0)
        x = self.attentions[0](x)
        x, c1 = self.resnets[1](x, c1)
        return x, (c0, c1)


class Downsample(nnx.Module):
    """Spatial /2 (pad right/bottom, stride-2 3x3 conv); optionally temporal /2.

    Temporal /2 (Wan's 'downsample3d'): the first frame of the sequence passes through
    unchanged; every later output frame j is a stride-2, 3-tap conv over input frames
    (2j-2, 2j-1, 2j). So `1 + 2m` frames become `1 + m`, and a chunk of 2n frames after
    the first one becomes n frames, needing only the previous chunk's last frame.
    """

    def __init__(self, dim: int, *, temporal: bool, conv_impl: str = "auto", rngs: nnx.Rngs):
        self.temporal = temporal
        self.resample = SpatialConv(dim, dim, stride=2, rngs=rngs)
        self.time_conv = (CausalConv3d(dim, dim, (3, 1, 1), conv_impl=conv_impl, rngs=rngs)
                          if temporal else None)

    def _time(self, x):
        return self.time_conv.conv(x, t_stride=2)

    def __call__(self, x, cache=None):
        x = self.resample(x)
        if not self.temporal:
            return x, None
        if cache is None:
            rest = x[:, 1:]
            if rest.shape[1] % 2:
                raise ValueError(f"temporal downsampling needs 1 + 2m frames, got {x.shape[1]}")
            out = x[:, :1] if rest.shape[1] == 0 else jnp.concatenate([x[:, :1], self._time(x)], 1)
        else:
            if x.shape[1] % 2:
                raise ValueError(f"a streamed chunk needs an even frame count here, got {x.shape[1]}")
            out = self._time(jnp.concatenate([cache, x], axis=1))
        return out, x[:, -1:]


class Upsample(nnx.Module):
    """Optionally temporal x2, then nearest spatial x2 and a 3x3 conv to `cout` channels.

    Temporal x2 (Wan's 'upsample3d'): the first frame passes through once; frames 1.. go
    through a causal 3-tap conv to 2C channels that unfolds into two frames each, with the
    first frame NOT part of that conv's past (diffusers starts its cache from zeros after
    the first chunk). So `1 + n` frames become `1 + 2n`.
    """

    def __init__(self, dim: int, cout: int, *, temporal: bool, conv_impl: str = "auto",
                 rngs: nnx.Rngs):
        self.temporal = temporal
        self.time_conv = (CausalConv3d(dim, 2 * dim, (3, 1, 1), conv_impl=conv_impl, rngs=rngs)
                          if temporal else None)
        self.resample = SpatialConv(dim, cout, rngs=rngs)

    def _time(self, x, cache):
        y, cache = self.time_conv(x, cache)  # (B, n, H, W, 2C)
        b, n, h, w, c2 = y.shape
        # channels [0:C] are the earlier frame, [C:2C] the later: interleave along time
        y = y.reshape(b, n, h, w, 2, c2 // 2).transpose(0, 1, 4, 2, 3, 5)
        return y.reshape(b, 2 * n, h, w, c2 // 2), cache

    def __call__(self, x, cache=None):
        new_cache = None
        if self.temporal:
            if cache is None and x.shape[1] == 1:
                # a lone first frame: nothing to unfold yet, the conv's past is zeros
                new_cache = jnp.zeros(x.shape[:1] + (CACHE_T,) + x.shape[2:], x.dtype)
            elif cache is None:
                rest, new_cache = self._time(x[:, 1:], None)
                x = jnp.concatenate([x[:, :1], rest], axis=1)
            else:
                x, new_cache = self._time(x, cache)
        x = jnp.repeat(jnp.repeat(x, 2, axis=2), 2, axis=3)
        return self.resample(x), new_cache
