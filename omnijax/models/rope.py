"""3D rotary position embedding over per-token (t, h, w) positions. Pure functions.

The head dimension is split into a temporal, a height and a width part (Wan2.1's split:
h and w get 2 * (D // 6) each, t the rest); each part rotates adjacent channel pairs
(x[2i], x[2i+1]) by position * theta^(-2i / d_part).

Positions are given per token, so the visual sequence `[reference | frames]` is
described by one `(N, 3)` table plus a per-token flag that switches the temporal rotation
off: reference tokens are an identity anchor, not a moment in time, so their temporal
part is not rotated at all (angle 0), while their spatial parts are.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels given to (t, h, w): all even, summing to `head_dim`."""
    if head_dim % 2 or head_dim < 6:
        raise ValueError(f"3D RoPE needs an even head_dim >= 6, got {head_dim}")
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def visual_positions(n_ref: int, n_frames: int, grid_h: int, grid_w: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Token positions for the packed sequence `[ref | frames]`, each frame a
    `grid_h x grid_w` token grid in row-major order.

    The window's frames sit at t = 0..F-1 whether they are clean motion frames or noisy
    ones (the prefix is a per-sample mask, not a shift of positions), so training windows
    and sampled segments see the same positions; reference frames have their temporal
    rotation off. Returns positions `(N, 3)` float32 and `temporal_on` `(N,)` float32
    (0 for reference).
    """
    frames_t = np.concatenate([np.zeros(n_ref), np.arange(n_frames)])
    temporal_on = np.concatenate([np.zeros(n_ref), np.ones(n_frames)])
    hh, ww = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    per_frame = grid_h * grid_w
    n_total = frames_t.shape[0]
    pos = np.stack([np.repeat(frames_t, per_frame),
                    np.tile(hh.reshape(-1), n_total),
                    np.tile(ww.reshape(-1), n_total)], axis=-1)
    return pos.astype(np.float32), np.repeat(temporal_on, per_frame).astype(np.float32)


def rope_angles(positions: np.ndarray | jnp.ndarray, temporal_on: np.ndarray | jnp.ndarray,
                head_dim: int, theta: float = 10000.0) -> tuple[jnp.ndarray, jnp.ndarray]:
    """cos, sin of shape `(N, head_dim // 2)` for tokens at `positions` `(N, 3)`."""
    positions = jnp.asarray(positions, jnp.float32)
    temporal_on = jnp.asarray(temporal_on, jnp.float32)
    angles = []
    for axis, dim in enumerate(axis_dims(head_dim)):
        inv_freq = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
        pos = positions[:, axis] * (temporal_on if axis == 0 else 1.0)
        angles.append(pos[:, None] * jnp.asarray(inv_freq, jnp.float32)[None, :])
    ang = jnp.concatenate(angles, axis=-1)
    return jnp.cos(ang), jnp.sin(ang)


def apply_rope(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Rotate `x` `(B, N, H, D)` by angles `(N, D // 2)`; pairs are adjacent channels.

    Computed in float32 and cast back (bf16 angles lose position resolution).
    """
    if x.shape[1] != cos.shape[0] or x.shape[-1] != 2 * cos.shape[-1]:
        raise ValueError(f"rope: x {x.shape} does not match angles {cos.shape} (expected (N, D/2))")
    xf = x.astype(jnp.float32).reshape(*x.shape[:-1], -1, 2)
    x0, x1 = xf[..., 0], xf[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = jnp.stack([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)
    return out.reshape(x.shape).astype(x.dtype)
