"""Flow matching (rectified flow), pure functions.

    x_t = (1 - t) x_0 + t eps        t = 0: data, t = 1: noise
    v   = eps - x_0                  the velocity the model predicts (dx_t / dt)

Timesteps for training come from a logit-normal (t = sigmoid(m + s n)), then a shift that
pushes t towards noise for larger token counts (SD3 / Flux: more tokens keep more of the
signal at a given noise level, so a high-resolution or long video needs more noise):

    t' = shift t / (1 + (shift - 1) t)

The shift is part of a model's recipe: training uses it, checkpoints record it and the
sampler's sigmas use the same value. `resolution_shift` is the bounded default rule: 1 up
to 256 visual tokens, log-linear in the token count up to 5 (Wan2.1's 480p value) at 32k
tokens, constant beyond.

The loss is a per-sample mean squared error over the noisy frames only (the clean
reference / motion prefix is input, not target), so the trainer can report the loss of
each condition mix separately.

Guidance combines the velocities of nested condition sets (e.g. none -> text -> text +
audio) with one scale per step up the chain; scales can be annealed over the sampling
steps (OmniHuman lowers the audio scale as denoising proceeds to avoid over-saturation).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp


def _bcast(t: jax.Array, like: jax.Array) -> jax.Array:
    t = jnp.asarray(t, jnp.float32)
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise ValueError(f"t must be (B,) = ({like.shape[0]},), got {t.shape}")
    return t.reshape(-1, *([1] * (like.ndim - 1)))


def interpolate(x0: jax.Array, eps: jax.Array, t: jax.Array) -> jax.Array:
    """x_t = (1 - t) x0 + t eps, t (B,) broadcast over the other axes."""
    if x0.shape != eps.shape:
        raise ValueError(f"x0 {x0.shape} and eps {eps.shape} must have the same shape")
    tb = _bcast(t, x0)
    return ((1.0 - tb) * x0 + tb * eps).astype(x0.dtype)


def velocity_target(x0: jax.Array, eps: jax.Array) -> jax.Array:
    """v = eps - x0 (constant along the straight path from x0 to eps)."""
    return eps - x0


def shift_timesteps(t: jax.Array, shift: float | jax.Array) -> jax.Array:
    """SD3 time shift t' = shift t / (1 + (shift - 1) t); shift > 1 moves t towards noise."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def resolution_shift(num_tokens: int, *, base_tokens: int = 256, max_tokens: int = 32768,
                     max_shift: float = 5.0) -> float:
    """Shift for `num_tokens` visual tokens: 1 at <= base_tokens, `max_shift` at >=
    max_tokens, log-linear in between. Bounded on both sides by construction, so no
    token count extrapolates it (an unbounded exp-linear rule reaches ~400 at 33k tokens)."""
    if num_tokens < 1:
        raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
    frac = math.log(max(num_tokens, base_tokens) / base_tokens) / math.log(max_tokens / base_tokens)
    return float(max_shift ** min(frac, 1.0))


def resolve_shift(value: str | float, num_tokens: int) -> float:
    """A config's shift: a number (> 0) as is, or "auto" = `resolution_shift(num_tokens)`."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return resolution_shift(num_tokens)
    try:
        shift = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"flow shift must be a number > 0 or 'auto', got {value!r}") from None
    if not shift > 0:
        raise ValueError(f"flow shift must be > 0, got {shift}")
    return shift


def sample_t(key: jax.Array, batch: int, *, mean: float = 0.0, std: float = 1.0, shift: float = 1.0
             ) -> jax.Array:
    """(B,) training timesteps: logit-normal(mean, std), then the resolution shift."""
    t = jax.nn.sigmoid(mean + std * jax.random.normal(key, (batch,), jnp.float32))
    return shift_timesteps(t, shift)


def noised(key: jax.Array, x0: jax.Array, *, mean: float = 0.0, std: float = 1.0, shift: float = 1.0
           ) -> dict[str, jax.Array]:
    """One training draw: {'t' (B,), 'eps', 'x_t', 'target'} for clean latents x0 (B, F, ...)."""
    kt, ke = jax.random.split(key)
    t = sample_t(kt, x0.shape[0], mean=mean, std=std, shift=shift)
    eps = jax.random.normal(ke, x0.shape, x0.dtype)
    return {"t": t, "eps": eps, "x_t": interpolate(x0, eps, t), "target": velocity_target(x0, eps)}


def per_sample_loss(pred: jax.Array, target: jax.Array, *, num_prefix: int = 0,
                    frame_mask: jax.Array | None = None) -> jax.Array:
    """Mean squared error per sample (B,), over the noisy frames only.

    pred (B, F, ...) is the model's velocity for the F noisy frames. target is either
    (B, F, ...) or (B, num_prefix + F, ...) with the clean prefix frames first (they are
    dropped). frame_mask (B, F) optionally excludes more frames (e.g. padding).
    """
    if num_prefix:
        target = target[:, num_prefix:]
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} does not match target {target.shape} "
                         f"(after dropping {num_prefix} prefix frames)")
    err = jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32))
    per_frame = err.reshape(*err.shape[:2], -1).mean(-1)          # (B, F)
    if frame_mask is None:
        return per_frame.mean(-1)
    w = jnp.asarray(frame_mask, jnp.float32)
    return (per_frame * w).sum(-1) / jnp.maximum(w.sum(-1), 1.0)


def guidance_scale(start: float, end: float, step: jax.Array | int, num_steps: int,
                   schedule: str = "linear") -> jax.Array:
    """Scale at sampling step `step` of `num_steps`, moving from `start` to `end`.

    "linear" or "cosine" (slow at both ends); "constant" keeps `start`.
    """
    frac = jnp.asarray(step, jnp.float32) / max(num_steps - 1, 1)
    if schedule == "constant":
        return jnp.asarray(start, jnp.float32)
    if schedule == "linear":
        w = frac
    elif schedule == "cosine":
        w = 0.5 - 0.5 * jnp.cos(jnp.pi * frac)
    else:
        raise ValueError(f"unknown guidance schedule {schedule!r}; use constant | linear | cosine")
    return (1.0 - w) * start + w * end


def combine_guidance(velocities: Sequence[jax.Array], scales: Sequence[float | jax.Array]) -> jax.Array:
    """Multi-condition CFG over nested condition sets.

    velocities [v_0, v_1, ..., v_n]: v_0 unconditional, v_i with one more condition than
    v_{i-1} (e.g. [none, +text, +text+audio]); scales [s_1, ..., s_n]:

        v = v_0 + sum_i s_i (v_i - v_{i-1})

    All scales 1 gives v_n back; a scale 0 removes that condition's push.
    """
    if len(velocities) != len(scales) + 1:
        raise ValueError(f"need one scale per step up the chain: {len(velocities)} velocities, "
                         f"{len(scales)} scales")
    out = velocities[0].astype(jnp.float32)
    for prev, cur, s in zip(velocities[:-1], velocities[1:], scales):
        out = out + jnp.asarray(s, jnp.float32) * (cur.astype(jnp.float32) - prev.astype(jnp.float32))
    return out.astype(velocities[-1].dtype)
