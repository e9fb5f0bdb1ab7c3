"""MMDiT with omni-conditions: two token streams, joint attention, adaLN-zero, audio cross-attention.

    x (B, F, h, w, c) the whole window: clean motion frames at their clean values, the
        other frames noisy at t; clean (B, F) bool marks the motion frames (a per-sample
        prefix is data, not shape: one compiled program serves every prefix length)
    ref (B, 1, h, w, c) reference latent, modulated as t = 0, temporal RoPE off
        -> patchify 1x2x2 -> visual tokens [ref | frames]                (B, N, W)
    text (B, L, Dt) -> projector -> text tokens                         (B, L, W)
    audio (B, T, Da), pose (B, T, Hp, Wp, K): the window's T = 1 + 4(F - 1) video frames,
        grouped per latent frame on that timeline
    per block (scanned, remat policy from config):
        adaLN(t per frame) -> joint attention over [visual | text] (own q/k/v/out weights,
        RMS QK-norm, 3D RoPE on visual) -> audio cross-attention (tokens of noisy frame f see
        only the audio window of f) -> adaLN -> separate MLPs
    frame tokens -> adaLN -> linear -> unpatchify -> velocity           (B, F, h, w, c)

Every frame carries its own timestep (clean frames and the reference at t = 0), so
modulation is per frame: one (B, frames, 6, W) table broadcast over each frame's tokens.
Clean frames are context only: they get no audio or pose (their own audio reaches the
noisy frames through the noisy frames' audio windows) and their output is never a target.

Modulation follows Wan2.1: one time projection to 6 x W per stream shared by all blocks,
plus a learned per-block table; both zero-initialised (adaLN-zero), so a fresh block is
the identity and a fresh model outputs zeros.

The residual stream is float32; matmuls run in `config.dtype` (bf16 on accelerators) with
`config.param_dtype` master weights. q, k and v are separate projections, each split on
`heads`, so tensor parallelism never splits one of them across another's shard.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omnijax.models import conditions as cond
from omnijax.models.attention import attention
from omnijax.models.partitioning import constrain, param_init
from omnijax.models.conditions import CONDITIONS
from omnijax.models.rope import apply_rope, rope_angles, visual_positions

REMAT_POLICIES = {
    "none": None,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}


@dataclasses.dataclass(frozen=True)
class MMDiTConfig:
    width: int = 64
    depth: int = 2
    heads: int = 2
    ffn: int = 256                   # MLP hidden of both streams
    latent_channels: int = 16
    patch: tuple[int, int] = (2, 2)  # spatial patch (temporal patch is 1)
    freq_dim: int = 256              # sinusoidal timestep features
    text_dim: int = 64
    audio_dim: int = 80
    audio_hidden: int = 64
    audio_window: int = 1            # adjacent latent frames on each side
    pose_channels: int = 13          # keypoints K
    pose_scale: float = 0.5          # heatmap size / video size
    pose_sigma: float = 0.04         # heatmap Gaussian sigma / heatmap height
    # keypoint channels the pose guider never sees (zeroed): e.g. the mouth and chin, whose
    # motion is the audio's to drive (a pose that carries the lips teaches lip-sync from pose)
    pose_ignore: tuple[int, ...] = ()
    pose_hidden: int = 16
    pose_dim: int = 8                # pose-guider channels concatenated to the latents
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    attention: str = "auto"          # auto | xla | cudnn | splash | reference
    remat: str = "none"              # see REMAT_POLICIES
    scan_layers: bool = True
    dtype: str = "float32"           # compute dtype
    param_dtype: str = "float32"

    def __post_init__(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if (self.width // self.heads) % 2 or self.width // self.heads < 6:
            raise ValueError(f"head_dim {self.width // self.heads} must be even and >= 6 (3D RoPE)")
        if self.remat not in REMAT_POLICIES:
            raise ValueError(f"remat {self.remat!r} not in {sorted(REMAT_POLICIES)}")
        object.__setattr__(self, "patch", tuple(self.patch))
        object.__setattr__(self, "pose_ignore", tuple(int(k) for k in self.pose_ignore))
        if any(not 0 <= k < self.pose_channels for k in self.pose_ignore):
            raise ValueError(f"pose_ignore {self.pose_ignore}: channels must be in [0, {self.pose_channels})")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @classmethod
    def tiny(cls, **kw) -> "MMDiTConfig":
        """CPU tests and the demo (~0.4M parameters)."""
        return cls(**{**dict(width=64, depth=2, heads=2, ffn=256), **kw})

    @classmethod
    def small(cls, **kw) -> "MMDiTConfig":
        """Single-GPU experiments (~110M parameters)."""
        return cls(**{**dict(width=512, depth=12, heads=8, ffn=2048, audio_hidden=512, pose_hidden=64,
                             pose_dim=16, text_dim=4096, audio_dim=768), **kw})

    @classmethod
    def base(cls, **kw) -> "MMDiTConfig":
        """About Wan2.1-1.3B's size (1.38B parameters): Wan's width 1536, 12 heads and ffn 8960,
        in 16 blocks rather than Wan's 30 because every block here carries a full-width text
        stream besides the visual one (30 such blocks would be 2.55B)."""
        return cls(**{**dict(width=1536, depth=16, heads=12, ffn=8960, audio_hidden=1024, pose_hidden=128,
                             pose_dim=16, text_dim=4096, audio_dim=768, remat="dots_with_no_batch_dims_saveable",
                             dtype="bfloat16"), **kw})

    @classmethod
    def large(cls, **kw) -> "MMDiTConfig":
        """About 7B parameters over both streams."""
        return cls(**{**dict(width=3072, depth=32, heads=24, ffn=8192, audio_hidden=1024, pose_hidden=128,
                             pose_dim=16, text_dim=4096, audio_dim=768, remat="nothing_saveable",
                             dtype="bfloat16"), **kw})

    @classmethod
    def from_dict(cls, d: Mapping) -> "MMDiTConfig":
        """Inverse of `dataclasses.asdict` (JSON round trips): unknown fields are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown MMDiTConfig fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**dict(d))

    @classmethod
    def preset(cls, name: str, **kw) -> "MMDiTConfig":
        if name not in PRESETS:
            raise ValueError(f"unknown MMDiT preset {name!r}; known: {PRESETS}")
        return getattr(cls, name)(**kw)


PRESETS = ("tiny", "small", "base", "large")


def _rms_norm(dim: int, eps: float, rngs: nnx.Rngs, param_dtype) -> nnx.RMSNorm:
    return nnx.RMSNorm(dim, epsilon=eps, dtype=jnp.float32, param_dtype=param_dtype,
                       scale_init=param_init(nnx.initializers.ones_init(), "norm"), rngs=rngs)


def _layer_norm(dim: int, eps: float, rngs: nnx.Rngs, affine: bool = False) -> nnx.LayerNorm:
    return nnx.LayerNorm(dim, epsilon=eps, use_scale=affine, use_bias=affine, dtype=jnp.float32,
                         scale_init=param_init(nnx.initializers.ones_init(), "norm"),
                         bias_init=param_init(nnx.initializers.zeros_init(), "norm"), rngs=rngs)


def _per_frame(x: jax.Array, frames: int) -> jax.Array:
    """(B, frames * G, W) tokens -> (B, frames, G, W): each frame's tokens share a timestep."""
    b, n, w = x.shape
    return x.reshape(b, frames, n // frames, w)


def _modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """x (B, N, W) tokens of `frames` equal-sized frames; shift/scale (B, frames, W)."""
    xf = _per_frame(x, shift.shape[1])
    return (xf * (1 + scale[:, :, None]) + shift[:, :, None]).reshape(x.shape)


def _gate(x: jax.Array, gate: jax.Array) -> jax.Array:
    """x (B, N, W) times a per-frame gate (B, frames, W)."""
    return (_per_frame(x, gate.shape[1]) * gate[:, :, None]).reshape(x.shape)


class StreamWeights(nnx.Module):
    """One stream's half of a block: qkv, QK-norms, out projection, MLP, modulation table."""

    def __init__(self, cfg: MMDiTConfig, *, rngs: nnx.Rngs):
        d, dt, pdt = cfg.width, jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        kw = dict(rngs=rngs, dtype=dt, param_dtype=pdt)
        self.norm1 = _layer_norm(d, cfg.norm_eps, rngs)
        self.q = cond.linear(d, d, ("embed", "heads"), **kw)
        self.k = cond.linear(d, d, ("embed", "heads"), **kw)
        self.v = cond.linear(d, d, ("embed", "heads"), **kw)
        self.q_norm = _rms_norm(cfg.head_dim, cfg.norm_eps, rngs, pdt)
        self.k_norm = _rms_norm(cfg.head_dim, cfg.norm_eps, rngs, pdt)
        self.out = cond.linear(d, d, ("heads", "embed"), **kw)
        self.norm2 = _layer_norm(d, cfg.norm_eps, rngs)
        self.mlp_in = cond.linear(d, cfg.ffn, ("embed", "mlp"), **kw)
        self.mlp_out = cond.linear(cfg.ffn, d, ("mlp", "embed"), **kw)
        # adaLN-zero: per-block offsets added to the shared time projection (zero at init).
        self.modulation = nnx.Param(param_init(nnx.initializers.zeros_init(), None, "embed")(
            rngs.params(), (6, d), pdt))

    def qkv_heads(self, x: jax.Array, heads: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        b, n, _ = x.shape
        v = self.v(x).reshape(b, n, heads, -1)
        q = self.q_norm(self.q(x).reshape(b, n, heads, -1)).astype(v.dtype)
        k = self.k_norm(self.k(x).reshape(b, n, heads, -1)).astype(v.dtype)
        return q, k, v

    def mlp(self, x: jax.Array) -> jax.Array:
        h = nnx.gelu(self.mlp_in(x), approximate=True)
        h = constrain(h, ("batch", None, "act_mlp"))
        return self.mlp_out(h)


class AudioCrossAttention(nnx.Module):
    """The tokens of latent frame f attend to the audio tokens of frame f's window only."""

    def __init__(self, cfg: MMDiTConfig, *, rngs: nnx.Rngs):
        d, dt, pdt = cfg.width, jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        kw = dict(rngs=rngs, dtype=dt, param_dtype=pdt)
        self.heads = cfg.heads
        self.attention = cfg.attention
        self.norm = _layer_norm(d, cfg.norm_eps, rngs, affine=True)
        self.q = cond.linear(d, d, ("embed", "heads"), **kw)
        self.k = cond.linear(d, d, ("embed", "heads"), **kw)
        self.v = cond.linear(d, d, ("embed", "heads"), **kw)
        self.q_norm = _rms_norm(cfg.head_dim, cfg.norm_eps, rngs, pdt)
        self.k_norm = _rms_norm(cfg.head_dim, cfg.norm_eps, rngs, pdt)
        # zero-init: audio enters a pretrained backbone as a no-op and is learned from there.
        self.out = cond.linear(d, d, ("heads", "embed"), zero=True, **kw)

    def __call__(self, x: jax.Array, audio: jax.Array, audio_mask: jax.Array, frames: int) -> jax.Array:
        """x (B, F*G, W) frame tokens; audio (B, F, S, W); audio_mask (B, F, S) -> update (B, F*G, W)."""
        b, n, d = x.shape
        g = n // frames
        s = audio.shape[2]
        h = self.norm(x).astype(x.dtype).reshape(b * frames, g, d)
        q = self.q_norm(self.q(h).reshape(b * frames, g, self.heads, -1))
        a = audio.reshape(b * frames, s, d)
        k = self.k_norm(self.k(a).reshape(b * frames, s, self.heads, -1))
        v = self.v(a).reshape(b * frames, s, self.heads, -1)
        o = attention(q.astype(v.dtype), k.astype(v.dtype), v, audio_mask.reshape(b * frames, s),
                      implementation=self.attention)
        return self.out(o.reshape(b, n, d))


class MMDiTBlock(nnx.Module):
    def __init__(self, cfg: MMDiTConfig, *, rngs: nnx.Rngs):
        self.heads = cfg.heads
        self.attention = cfg.attention
        self.visual = StreamWeights(cfg, rngs=rngs)
        self.text = StreamWeights(cfg, rngs=rngs)
        self.audio = AudioCrossAttention(cfg, rngs=rngs)

    def __call__(self, x: jax.Array, y: jax.Array, ctx: dict) -> tuple[jax.Array, jax.Array]:
        """x (B, N, W) visual [ref | frames]; y (B, L, W) text; ctx holds modulations, rope,
        masks, audio tokens and the per-frame audio gate."""
        vmod = ctx["visual_mod"] + self.visual.modulation[...][None, None]  # (B, frames, 6, W)
        tmod = ctx["text_mod"] + self.text.modulation[...][None]            # (B, 6, W)
        v_sh1, v_sc1, v_g1, v_sh2, v_sc2, v_g2 = (vmod[:, :, i] for i in range(6))
        t_sh1, t_sc1, t_g1, t_sh2, t_sc2, t_g2 = (tmod[:, None, i] for i in range(6))
        n = x.shape[1]

        # joint attention over [visual | text]
        hx = _modulate(self.visual.norm1(x), v_sh1, v_sc1)
        hy = self.text.norm1(y) * (1 + t_sc1) + t_sh1
        qx, kx, vx = self.visual.qkv_heads(hx, self.heads)
        qy, ky, vy = self.text.qkv_heads(hy, self.heads)
        qx = apply_rope(qx, ctx["rope_cos"], ctx["rope_sin"])
        kx = apply_rope(kx, ctx["rope_cos"], ctx["rope_sin"])
        q = constrain(jnp.concatenate([qx, qy], 1), ("batch", "length", "act_heads", "head_dim"))
        k = constrain(jnp.concatenate([kx, ky], 1), ("batch", "length", "act_heads", "head_dim"))
        v = constrain(jnp.concatenate([vx, vy], 1), ("batch", "length", "act_heads", "head_dim"))
        o = attention(q, k, v, ctx["key_mask"], implementation=self.attention)
        o = o.reshape(*o.shape[:2], -1)
        x = x + _gate(self.visual.out(o[:, :n]), v_g1)
        y = y + self.text.out(o[:, n:]) * t_g1

        # audio cross-attention on the frame tokens, gated off on clean frames (a mask, so
        # every prefix length runs the same program)
        n_ref = ctx["n_ref_tokens"]
        frames = ctx["audio"].shape[1]
        upd = self.audio(x[:, n_ref:], ctx["audio"], ctx["audio_mask"], frames)
        upd = _gate(upd, ctx["audio_gate"])
        x = jnp.concatenate([x[:, :n_ref], x[:, n_ref:] + upd], axis=1) if n_ref else x + upd
        x = constrain(x, ("batch", "length", "act_embed"))

        # separate MLPs
        hx = _modulate(self.visual.norm2(x), v_sh2, v_sc2)
        x = x + _gate(self.visual.mlp(hx), v_g2)
        hy = self.text.norm2(y) * (1 + t_sc2) + t_sh2
        y = y + self.text.mlp(hy) * t_g2
        return constrain(x, ("batch", "length", "act_embed")), constrain(y, ("batch", "text_length", "act_embed"))


def patchify(x: jax.Array, patch: tuple[int, int]) -> jax.Array:
    """(B, F, h, w, C) -> (B, F * h/ph * w/pw, ph * pw * C), frame-major, row-major."""
    b, f, h, w, c = x.shape
    ph, pw = patch
    x = x.reshape(b, f, h // ph, ph, w // pw, pw, c).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, f * (h // ph) * (w // pw), ph * pw * c)


def unpatchify(tokens: jax.Array, frames: int, h: int, w: int, patch: tuple[int, int]) -> jax.Array:
    """Inverse of `patchify`: (B, F * gh * gw, ph * pw * C) -> (B, F, h, w, C)."""
    b = tokens.shape[0]
    ph, pw = patch
    x = tokens.reshape(b, frames, h // ph, w // pw, ph, pw, -1).transpose(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, frames, h, w, -1)


class MMDiT(nnx.Module):
    """`MMDiT(config, rngs=nnx.Rngs(0))(x, t, *, clean, ref, audio, pose, text, text_mask, keep)`."""

    def __init__(self, config: MMDiTConfig, *, rngs: nnx.Rngs):
        cfg = self.config = config
        d, dt, pdt = cfg.width, jnp.dtype(cfg.dtype), jnp.dtype(cfg.param_dtype)
        kw = dict(rngs=rngs, dtype=dt, param_dtype=pdt)
        ph, pw = cfg.patch
        self.patch_embed = cond.linear(ph * pw * (cfg.latent_channels + cfg.pose_dim), d, ("patch", "embed"), **kw)
        self.time = cond.TimestepEmbedder(cfg.freq_dim, d, **kw)
        # shared time projections (adaLN-zero): visual and text streams, 6 x W each
        self.visual_time_proj = cond.linear(d, 6 * d, ("embed", "modulation"), zero=True, **kw)
        self.text_time_proj = cond.linear(d, 6 * d, ("embed", "modulation"), zero=True, **kw)
        self.text = cond.TextProjector(cfg.text_dim, d, **kw)
        self.audio = cond.AudioProjector(cfg.audio_dim, cfg.audio_hidden, d, cfg.audio_window, **kw)
        self.pose = cond.PoseGuider(cfg.pose_channels, cfg.pose_hidden, cfg.pose_dim, cfg.pose_scale,
                                     ignore=cfg.pose_ignore, **kw)

        @nnx.split_rngs(splits=cfg.depth)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_blocks(rngs: nnx.Rngs) -> MMDiTBlock:
            return MMDiTBlock(cfg, rngs=rngs)

        self.blocks = make_blocks(rngs)
        self.final_norm = _layer_norm(d, cfg.norm_eps, rngs)
        self.final_modulation = nnx.Param(param_init(nnx.initializers.zeros_init(), None, "embed")(
            rngs.params(), (2, d), pdt))
        self.final_time_proj = cond.linear(d, 2 * d, ("embed", "modulation"), zero=True, **kw)
        self.final_out = cond.linear(d, ph * pw * cfg.latent_channels, ("embed", "patch"), zero=True, **kw)

    # ---------------------------------------------------------------- input checks
    def _check(self, x, t, clean, ref, audio, pose, text, text_mask, keep) -> None:
        cfg = self.config
        if x.ndim != 5 or x.shape[-1] != cfg.latent_channels:
            raise ValueError(f"x must be (B, F, h, w, {cfg.latent_channels}) latents, got {x.shape}")
        b, f, h, w, c = x.shape
        ph, pw = cfg.patch
        if h % ph or w % pw:
            raise ValueError(f"latent grid {h}x{w} is not divisible by the patch {cfg.patch}")
        if t.shape != (b,):
            raise ValueError(f"t must be (B,) = ({b},), got {t.shape}")
        if clean is not None and jnp.shape(clean) != (b, f):
            raise ValueError(f"clean must be (B, F) = ({b}, {f}) bool (True = clean motion frame), "
                             f"got {jnp.shape(clean)}")
        if ref is not None and (ref.ndim != 5 or ref.shape != (b, 1, h, w, c)):
            raise ValueError(f"ref must hold exactly one latent frame (B, 1, h, w, c) = "
                             f"({b}, 1, {h}, {w}, {c}), got {ref.shape}")
        n_video = 1 + 4 * (f - 1)
        if audio is not None and audio.shape != (b, n_video, cfg.audio_dim):
            raise ValueError(f"audio must be (B, 1 + 4(F-1), audio_dim) = ({b}, {n_video}, {cfg.audio_dim}), "
                             f"got {audio.shape}")
        hp, wp = round(8 * h * cfg.pose_scale), round(8 * w * cfg.pose_scale)
        if pose is not None and pose.shape != (b, n_video, hp, wp, cfg.pose_channels):
            raise ValueError(f"pose must be (B, 1 + 4(F-1), Hp, Wp, K) = ({b}, {n_video}, {hp}, {wp}, "
                             f"{cfg.pose_channels}), got {pose.shape}")
        if text is not None:
            if text.ndim != 3 or text.shape[0] != b or text.shape[2] != cfg.text_dim:
                raise ValueError(f"text must be (B, L, {cfg.text_dim}), got {text.shape}")
            if text_mask is not None and text_mask.shape != text.shape[:2]:
                raise ValueError(f"text_mask must be (B, L) = {text.shape[:2]}, got {text_mask.shape}")
        for name, k in (keep or {}).items():
            if name not in CONDITIONS:
                raise ValueError(f"keep has unknown condition {name!r}; known: {CONDITIONS}")
            if jnp.shape(k) != (b,):
                raise ValueError(f"keep[{name!r}] must be (B,) = ({b},) bool, got {jnp.shape(k)}")

    # ---------------------------------------------------------------- forward
    def __call__(self, x: jax.Array, t: jax.Array, *, clean: jax.Array | None = None,
                 ref: jax.Array | None = None, audio: jax.Array | None = None,
                 pose: jax.Array | None = None, text: jax.Array | None = None,
                 text_mask: jax.Array | None = None, keep: Mapping[str, jax.Array] | None = None) -> jax.Array:
        """Velocity (B, F, h, w, c) for every frame of `x`; only the noisy frames' rows
        (`~clean`) mean anything: the loss and the sampler ignore the clean ones."""
        cfg = self.config
        t = jnp.asarray(t, jnp.float32)
        self._check(x, t, clean, ref, audio, pose, text, text_mask, keep)
        b, f, h, w, c = x.shape
        dt = jnp.dtype(cfg.dtype)
        keep = {name: jnp.ones((b,), bool) if (keep is None or name not in keep) else jnp.asarray(keep[name], bool)
                for name in CONDITIONS}
        noisy = jnp.ones((b, f), bool) if clean is None else ~jnp.asarray(clean, bool)   # (B, F)
        noisy_f = noisy.astype(jnp.float32)

        # visual tokens [ref | frames]; pose features ride on extra channels of the noisy frames
        pose_feat = (self.pose(pose, keep["pose"]) if pose is not None
                     else jnp.zeros((b, f, h, w, cfg.pose_dim), x.dtype))
        pose_feat = pose_feat.astype(jnp.float32) * noisy_f[:, :, None, None, None]
        n_ref = 0 if ref is None else 1
        latents = jnp.concatenate([a.astype(jnp.float32) for a in (ref, x) if a is not None], axis=1)
        extra = jnp.concatenate([jnp.zeros((b, n_ref, h, w, cfg.pose_dim), jnp.float32), pose_feat], axis=1)
        tokens = patchify(jnp.concatenate([latents, extra], axis=-1), cfg.patch)
        vis = self.patch_embed(tokens).astype(jnp.float32)
        vis = constrain(vis, ("batch", "length", "act_embed"))
        per_frame = (h // cfg.patch[0]) * (w // cfg.patch[1])

        # text stream
        if text is None:
            txt, txt_mask = self.text.null_tokens(b, dt)
        else:
            mask = jnp.ones(text.shape[:2], bool) if text_mask is None else jnp.asarray(text_mask, bool)
            txt, txt_mask = self.text(text.astype(dt), mask, keep["text"])
        txt = txt.astype(jnp.float32)

        # timesteps: every visual frame its own (reference and clean frames at t = 0); the
        # text stream and nothing else follows the noisy frames' t
        frame_t = jnp.where(noisy, t[:, None], 0.0)                               # (B, F)
        frame_t = jnp.concatenate([jnp.zeros((b, n_ref)), frame_t], axis=1)       # (B, frames)
        frames = n_ref + f
        temb = self.time(jnp.concatenate([frame_t.reshape(-1), t]))              # (B*frames + B, W)
        temb_frames = temb[:b * frames].reshape(b, frames, -1)
        temb_noisy = temb[b * frames:]
        visual_mod = self.visual_time_proj(nnx.silu(temb_frames)).reshape(b, frames, 6, -1)
        text_mod = self.text_time_proj(nnx.silu(temb_noisy)).reshape(b, 6, -1)

        pos, temporal_on = visual_positions(n_ref, f, h // cfg.patch[0], w // cfg.patch[1])
        cos, sin = rope_angles(pos, temporal_on, cfg.head_dim, cfg.rope_theta)
        vis_mask = jnp.ones((b, vis.shape[1]), bool)
        if n_ref:  # a dropped reference is excluded from every key set
            vis_mask = vis_mask.at[:, :per_frame].set(keep["ref"][:, None])
        ctx = dict(visual_mod=visual_mod.astype(jnp.float32), text_mod=text_mod.astype(jnp.float32),
                   rope_cos=cos, rope_sin=sin, key_mask=jnp.concatenate([vis_mask, txt_mask], axis=1),
                   audio_gate=jnp.broadcast_to(noisy_f[:, :, None], (b, f, 1)),
                   n_ref_tokens=n_ref * per_frame)
        if audio is not None:
            ctx["audio"], ctx["audio_mask"] = self.audio(audio.astype(dt), keep["audio"])
        else:
            ctx["audio"], ctx["audio_mask"] = self.audio.null_tokens(b, f, dt)

        vis, txt = self._run_blocks(vis, txt, ctx)

        # output head on the frame tokens, modulated by each frame's own t
        out_tokens = vis[:, n_ref * per_frame:]
        fmod = self.final_time_proj(nnx.silu(temb_frames[:, n_ref:])).reshape(b, f, 2, -1)
        fmod = fmod + self.final_modulation[...][None, None]
        out = self.final_out(_modulate(self.final_norm(out_tokens), fmod[:, :, 0], fmod[:, :, 1]))
        return unpatchify(out.astype(jnp.float32), f, h, w, cfg.patch)

    def _run_blocks(self, vis, txt, ctx):
        cfg = self.config
        n_ref = ctx.pop("n_ref_tokens")   # static: stays out of the scanned/remat'ed operands

        def body(block: MMDiTBlock, carry, ctx):
            x, y = carry
            return block(x, y, {**ctx, "n_ref_tokens": n_ref})

        policy = REMAT_POLICIES[cfg.remat]
        if cfg.remat != "none":
            body = nnx.remat(body, policy=policy, prevent_cse=not cfg.scan_layers)
        if cfg.scan_layers:
            scan = nnx.scan(body, in_axes=(0, nnx.Carry, None), out_axes=nnx.Carry,
                            transform_metadata={nnx.PARTITION_NAME: "layers"})
            return scan(self.blocks, (vis, txt), ctx)
        graphdef, state = nnx.split(self.blocks)
        carry = (vis, txt)
        for i in range(cfg.depth):
            block = nnx.merge(graphdef, jax.tree.map(lambda a: a[i], state))
            carry = body(block, carry, ctx)
        return carry


KIND = "mmdit"
# what a loader may change without touching the saved weights
LOAD_OVERRIDES = ("dtype", "attention", "remat", "scan_layers")


def save(path, model: MMDiT, *, overwrite: bool = False):
    """Write `model` as an orbax checkpoint + config.json that `load` reads back."""
    from omnijax import module_io
    return module_io.save_module(path, model, model.config, kind=KIND, overwrite=overwrite)


def load(path, **overrides) -> MMDiT:
    """An MMDiT saved by `save`; `overrides` may set LOAD_OVERRIDES fields (e.g. compute
    dtype float32 for bf16 weights on a CPU), never the architecture or parameter dtype."""
    from omnijax import module_io
    bad = set(overrides) - set(LOAD_OVERRIDES)
    if bad:
        raise ValueError(f"cannot override {sorted(bad)} when loading; allowed: {LOAD_OVERRIDES}")
    return module_io.load_module(
        path, lambda cfg: MMDiT(MMDiTConfig.from_dict({**cfg, **overrides}), rngs=nnx.Rngs(0)), kind=KIND)


def num_params(config: MMDiTConfig) -> int:
    """Parameter count without allocating (nnx.eval_shape)."""
    abstract = nnx.eval_shape(lambda: MMDiT(config, rngs=nnx.Rngs(0)))
    return int(sum(np.prod(v.shape) for v in jax.tree.leaves(nnx.state(abstract, nnx.Param))))


def random_mmdit(config: MMDiTConfig, seed: int = 0) -> MMDiT:
    """An MMDiT with every parameter random (zero-initialised ones included), built on the host.

    For tests and benchmarks: a fresh MMDiT outputs zeros (adaLN-zero), so a sensitivity
    test needs all parameters live; and building from NumPy skips the per-shape XLA
    compiles of eager initialisation (seconds each on a busy CPU). Kernels get
    N(0, 1/fan_in), norm scales 1 + N(0, 0.1^2), other vectors and tables N(0, 0.1^2).
    """
    abstract = nnx.eval_shape(lambda: MMDiT(config, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)

    def fill(var):
        if not isinstance(var, nnx.Variable):
            return var
        value = var.get_value()
        names = var.get_metadata().get("out_sharding") or ()
        shape = tuple(value.shape)
        core = shape[1:] if names and names[0] == "layers" else shape
        if len(core) >= 2 and (not names or "tokens" not in names):
            arr = rng.normal(size=shape) / np.sqrt(np.prod(core[:-1]))
        elif "norm" in names:
            arr = 1.0 + 0.1 * rng.normal(size=shape)
        else:
            arr = 0.1 * rng.normal(size=shape)
        return var.replace(jnp.asarray(arr, value.dtype))

    state = jax.tree.map(fill, state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return nnx.merge(graphdef, state)
