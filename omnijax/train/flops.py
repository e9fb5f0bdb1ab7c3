"""Training FLOPs per example, the numerator of the trainer's MFU estimate.

Two ways to count, one per kind of model:
    mmdit_forward_flops the MMDiT, each weight charged for the tokens it sees (the text
                        stream's weights meet text tokens only, the audio keys the audio
                        slots, ...), plus attention; x 3 for forward + backward
    xla_flops           XLA's own count of a jitted forward, x 3 for forward + backward
                        (convolutional models, where no closed form is worth keeping)
Both work on abstract shapes (`jax.eval_shape` / lowering), so counting a large preset
allocates nothing.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
from flax import nnx


def xla_flops(model_fn: Callable[[nnx.Rngs], nnx.Module], forward: Callable[[nnx.Module, Any], Any],
              example: jax.ShapeDtypeStruct) -> float:
    """3 x XLA's FLOP count of `forward(model, example)` (forward + backward ~ 3 forwards)."""
    from omnijax.train.state import build_abstract

    graphdef, state, _ = build_abstract(model_fn, ...)

    def fwd(s, x):
        return forward(nnx.merge(graphdef, s), x)

    cost = jax.jit(fwd).lower(state, example).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return 3.0 * float((cost or {}).get("flops", 0.0))


def mmdit_forward_flops(cfg, frames_visual: int, frames_noisy: int, h: int, w: int, text_len: int) -> float:
    """Forward FLOPs of one MMDiT sample: `frames_visual` latent frames in the visual stream
    (reference + window) of `h x w` latents, `frames_noisy` of them with audio slots,
    `text_len` text tokens. Each parameter group costs 2 x its size x the tokens it meets;
    attention costs 4 x depth x (visual + text tokens)^2 x width, and the audio
    cross-attention 4 x depth x noisy tokens x slots x width. Modulation, null and slot
    tables are lookups (free); the strided pose guider is charged ~1/4 of its full-res size."""
    from omnijax.models.mmdit import MMDiT

    abstract = nnx.eval_shape(lambda: MMDiT(cfg, rngs=nnx.Rngs(0)))
    groups: dict[str, int] = {}
    for path, var in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
        key = "/".join(str(p) for p in path[:-1])
        groups[key] = groups.get(key, 0) + int(math.prod(var.get_value().shape))
    per_frame = (h // cfg.patch[0]) * (w // cfg.patch[1])
    t_vis, t_noisy = frames_visual * per_frame, frames_noisy * per_frame
    slots = 4 * (2 * cfg.audio_window + 1)
    video_frames = 1 + 4 * (frames_noisy - 1)
    total = 0.0
    for key, n in groups.items():
        if key.startswith(("blocks/text", "text/")):
            tokens = text_len
        elif key in ("blocks/audio/k", "blocks/audio/v"):
            tokens = frames_noisy * slots
        elif key.startswith("audio/"):
            tokens = video_frames
        elif key.startswith(("time", "visual_time_proj", "final_time_proj")):
            tokens = frames_visual + 1    # per frame (each frame has its own t) + the text stream's
        elif key.startswith("text_time_proj"):
            tokens = 1
        elif key.startswith("pose/") or key in ("", "audio", "text", "blocks/text", "blocks/visual"):
            continue                      # the guider below; the rest are tables
        else:
            tokens = t_vis
        total += 2.0 * n * tokens
    pose_params = sum(v for k, v in groups.items() if k.startswith("pose/"))
    hp = int(8 * h * cfg.pose_scale)
    total += 2.0 * pose_params * frames_noisy * hp * hp / 4
    total += 4.0 * cfg.depth * (t_vis + text_len) ** 2 * cfg.width
    total += 4.0 * cfg.depth * t_noisy * slots * cfg.width
    return total
