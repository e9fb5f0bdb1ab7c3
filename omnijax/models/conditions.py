"""Condition projections for the MMDiT: timestep, text, audio windows, pose guider.

Frame bookkeeping shared by audio and pose: a video of T = 1 + 4(F-1) frames maps to F
latent frames; latent frame 0 covers video frame 0 alone, latent frame f >= 1 covers
video frames 4f-3 .. 4f. Both conditions are therefore grouped by padding 3 empty frames
in front, which makes T' = 4F and a clean `(F, 4, ...)` reshape whose first group holds
3 empty slots and the real frame 0.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omnijax.models.partitioning import param_init

# The condition vocabulary of the whole project, in the one order that mix codes (bit i =
# condition i) and the curriculum's per-sample draws use: changing it changes both.
CONDITIONS = ("ref", "text", "audio", "pose")

_dense = nnx.initializers.lecun_normal()
_zeros = nnx.initializers.zeros_init()
_normal = nnx.initializers.normal(0.02)


def linear(din: int, dout: int, axes: tuple[str | None, str | None], *, rngs: nnx.Rngs,
           dtype=jnp.float32, param_dtype=jnp.float32, zero: bool = False, use_bias: bool = True
           ) -> nnx.Linear:
    """nnx.Linear with logical axis names on kernel and bias; `zero` -> zero-init kernel."""
    return nnx.Linear(din, dout, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                      kernel_init=param_init(_zeros if zero else _dense, *axes),
                      bias_init=param_init(_zeros, axes[1]), rngs=rngs)


def latent_frames(num_video_frames: int) -> int:
    """F for T = 1 + 4(F-1) video frames; raises for other T."""
    if num_video_frames < 1 or (num_video_frames - 1) % 4:
        raise ValueError(f"expected 1 + 4k video frames, got {num_video_frames}")
    return 1 + (num_video_frames - 1) // 4


def group_by_latent_frame(x: jax.Array) -> jax.Array:
    """`(B, T, ...)` video-rate -> `(B, F, 4, ...)`, 3 zero frames padded in front."""
    latent_frames(x.shape[1])
    pad = [(0, 0), (3, 0)] + [(0, 0)] * (x.ndim - 2)
    x = jnp.pad(x, pad)
    return x.reshape(x.shape[0], x.shape[1] // 4, 4, *x.shape[2:])


def timestep_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Sinusoidal embedding of t in [0, 1] (scaled by 1000, as diffusion models do): (B, dim)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (t.astype(jnp.float32) * 1000.0)[:, None] * freqs[None]
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class TimestepEmbedder(nnx.Module):
    """t (B,) -> (B, width) through sinusoids and a 2-layer MLP."""

    def __init__(self, freq_dim: int, width: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        self.freq_dim = freq_dim
        self.fc1 = linear(freq_dim, width, ("vocab", "embed"), rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.fc2 = linear(width, width, ("mlp", "embed"), rngs=rngs, dtype=dtype, param_dtype=param_dtype)

    def __call__(self, t: jax.Array) -> jax.Array:
        return self.fc2(nnx.silu(self.fc1(timestep_embedding(t, self.freq_dim))))


class TextProjector(nnx.Module):
    """Frozen text-encoder states (B, L, Dt) -> text-stream tokens (B, L, width).

    An absent text (per sample, or text=None) is one learned null token: `null_tokens`
    gives it and `__call__` swaps it in and masks the rest of that sample's sequence.
    """

    def __init__(self, text_dim: int, width: int, *, rngs: nnx.Rngs, dtype=jnp.float32,
                 param_dtype=jnp.float32):
        self.fc1 = linear(text_dim, width, ("vocab", "embed"), rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.fc2 = linear(width, width, ("mlp", "embed"), rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.null = nnx.Param(param_init(_normal, "tokens", "embed")(rngs.params(), (1, width), param_dtype))

    def null_tokens(self, batch: int, dtype) -> tuple[jax.Array, jax.Array]:
        tokens = jnp.broadcast_to(self.null[...].astype(dtype), (batch, *self.null.shape))
        return tokens, jnp.ones((batch, 1), bool)

    def __call__(self, text: jax.Array, mask: jax.Array, keep: jax.Array) -> tuple[jax.Array, jax.Array]:
        """text (B, L, Dt), mask (B, L) bool, keep (B,) bool -> tokens (B, L, W), mask (B, L)."""
        tokens = self.fc2(nnx.gelu(self.fc1(text), approximate=True))
        first = jnp.arange(text.shape[1]) == 0
        tokens = jnp.where(keep[:, None, None], tokens, self.null[...].astype(tokens.dtype)[None])
        mask = jnp.where(keep[:, None], mask, first[None, :])
        return tokens, mask


def audio_window_mask(num_latent: int, window: int) -> np.ndarray:
    """(F, S) bool: which of latent frame f's S = 4(2w+1) audio slots hold real video frames."""
    group_valid = np.ones((num_latent, 4), bool)
    group_valid[0, :3] = False  # the 3 padded frames in front of video frame 0
    padded = np.pad(group_valid, ((window, window), (0, 0)))  # out-of-range latent frames
    idx = np.arange(num_latent)[:, None] + np.arange(2 * window + 1)[None, :]
    return padded[idx].reshape(num_latent, -1)


class AudioProjector(nnx.Module):
    """Frame-rate audio features (B, T, Da) -> per-latent-frame tokens (B, F, S, width).

    Each latent frame f gets the projected features of its own video frames and those of
    `window` latent frames on each side: S = 4 (2 window + 1) slots, with a learned slot
    embedding (the model knows where in the window a feature sits) and a mask for slots
    that fall outside the clip. An absent audio is the learned null table (all slots valid).
    """

    def __init__(self, audio_dim: int, hidden: int, width: int, window: int, *, rngs: nnx.Rngs,
                 dtype=jnp.float32, param_dtype=jnp.float32):
        self.window = window
        self.slots = 4 * (2 * window + 1)
        self.fc1 = linear(audio_dim, hidden, ("vocab", "mlp"), rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.fc2 = linear(hidden, width, ("mlp", "embed"), rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        self.slot_embed = nnx.Param(param_init(_normal, "tokens", "embed")(rngs.params(), (self.slots, width),
                                                                             param_dtype))
        self.null = nnx.Param(param_init(_normal, "tokens", "embed")(rngs.params(), (self.slots, width),
                                                                       param_dtype))

    def null_tokens(self, batch: int, num_latent: int, dtype) -> tuple[jax.Array, jax.Array]:
        tokens = jnp.broadcast_to(self.null[...].astype(dtype), (batch, num_latent, *self.null.shape))
        return tokens, jnp.ones((batch, num_latent, self.slots), bool)

    def __call__(self, audio: jax.Array, keep: jax.Array) -> tuple[jax.Array, jax.Array]:
        """audio (B, T, Da), keep (B,) -> tokens (B, F, S, W), mask (B, F, S) bool."""
        b = audio.shape[0]
        feats = self.fc2(nnx.gelu(self.fc1(audio), approximate=True))        # (B, T, W)
        groups = group_by_latent_frame(feats)                                 # (B, F, 4, W)
        f = groups.shape[1]
        w = self.window
        groups = jnp.pad(groups, ((0, 0), (w, w), (0, 0), (0, 0)))
        idx = np.arange(f)[:, None] + np.arange(2 * w + 1)[None, :]           # (F, 2w+1)
        tokens = groups[:, idx].reshape(b, f, self.slots, -1)                 # (B, F, S, W)
        tokens = tokens + self.slot_embed[...].astype(tokens.dtype)
        mask = jnp.broadcast_to(jnp.asarray(audio_window_mask(f, w)), (b, f, self.slots))
        null, null_mask = self.null_tokens(b, f, tokens.dtype)
        tokens = jnp.where(keep[:, None, None, None], tokens, null)
        mask = jnp.where(keep[:, None, None], mask, null_mask)
        return tokens, mask


class PoseGuider(nnx.Module):
    """Keypoint heatmaps (B, T, Hp, Wp, K) -> pose features on the latent grid (B, F, h, w, Cp).

    The 4 video frames of each latent frame are concatenated on channels (adjacent-frame
    concat), then a strided conv net brings Hp = 8 h * pose_scale down to h. The last conv
    is zero-initialised (ControlNet habit) so adding pose to a trained model starts as a
    no-op. An absent pose is zeros; channels in `ignore` are zeroed (never seen).
    """

    def __init__(self, keypoints: int, hidden: int, out_channels: int, pose_scale: float, *,
                 rngs: nnx.Rngs, ignore: tuple[int, ...] = (), dtype=jnp.float32, param_dtype=jnp.float32):
        down = 8 * pose_scale
        n_down = int(round(math.log2(down))) if down >= 1 else -1
        if n_down < 0 or 2 ** n_down != down:
            raise ValueError(f"pose_scale {pose_scale} must make 8 * pose_scale a power of two >= 1")
        self.factor = int(down)
        # a constant, not a parameter: which keypoints the guider sees is the config's choice
        self.seen = tuple(k not in set(ignore) for k in range(keypoints))
        conv = lambda cin, cout, stride, init: nnx.Conv(  # noqa: E731
            cin, cout, (3, 3), strides=(stride, stride), padding="SAME", dtype=dtype, param_dtype=param_dtype,
            kernel_init=param_init(init, "conv", "conv", "conv", "conv"), bias_init=param_init(_zeros, "conv"),
            rngs=rngs)
        layers = [conv(4 * keypoints, hidden, 1, _dense)]
        for _ in range(n_down):
            layers.append(conv(hidden, hidden, 2, _dense))
        self.convs = nnx.List(layers)
        self.out = conv(hidden, out_channels, 1, _zeros)

    def __call__(self, pose: jax.Array, keep: jax.Array) -> jax.Array:
        b, t, hp, wp, k = pose.shape
        if hp % self.factor or wp % self.factor:
            raise ValueError(f"pose heatmaps {hp}x{wp} are not divisible by the guider stride {self.factor}")
        pose = pose.astype(self.out.kernel.dtype)
        if not all(self.seen):
            pose = pose * jnp.asarray(self.seen, pose.dtype)
        groups = group_by_latent_frame(pose)  # (B, F, 4, Hp, Wp, K)
        f = groups.shape[1]
        x = jnp.moveaxis(groups, 2, -2).reshape(b * f, hp, wp, 4 * k)
        for layer in self.convs:
            x = nnx.silu(layer(x))
        x = self.out(x)
        x = x.reshape(b, f, *x.shape[1:])
        return jnp.where(keep[:, None, None, None, None], x, 0).astype(x.dtype)
