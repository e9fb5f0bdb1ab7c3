"""The two things one trainer trains: the causal VAE and the MMDiT.

An objective bundles what the generic loop needs and nothing else:
    model_fn(rngs) -> nnx.Module         the model (presets named, not redefined), LoRA-wrapped
                                         when cfg.lora.rank > 0; base_model_fn: without LoRA
    trainable                            NNX filter of what the optimizer updates
    loss(model, batch, rng) -> (loss, aux)   pure, traced inside the jitted step
    batch_spec(B) -> {key: ShapeDtypeStruct} global batch shapes (for lowering)
    make_data(cfg, mesh) -> checkpointable iterator of this process's batch rows
    recipe() -> dict                     what sampling must repeat (see below)
    breakdowns                           {aux key: group names} the trainer logs per group
    tokens_per_example(), flops_per_example()   for tokens/s and the MFU estimate

The concerns around an objective live where their names say: its batches in
`omnijax.train.inputs` (over the sources of `omnijax.data`), the check that a preprocessed
cache fits the model in `omnijax.data.pipeline.check_cache`, FLOP counting in
`omnijax.train.flops`. This module holds the models and the losses.

VAE: reconstruction (L1 + L2) + KL to N(0, I), so small VAEs can be trained (SynthTalk).
MMDiT: flow matching on cached, normalised latents with the batch's `keep_*` masks, a
per-sample clean motion-frame prefix (probability `motion_prob`, lengths `motion_frames`;
README "Long video": 2 latent frames = the 5 video frames a segment hands the next one),
and the loss broken down by condition mix and by prefix.

`recipe()` is what sampling must repeat (the flow shift, timestep distribution, latent
shape, motion frames, conditions trained): the trainer records it in every checkpoint's
config, and export copies it into the inference directory.
"""

from __future__ import annotations


import jax
import jax.numpy as jnp
from flax import nnx

from omnijax.models.conditions import CONDITIONS
from omnijax.train import flops, inputs

# mix index = sum(keep_c << i): 16 named condition mixes for the per-mix loss breakdown
MIX_NAMES = tuple("_".join(c for i, c in enumerate(CONDITIONS) if code >> i & 1) or "none"
                  for code in range(2 ** len(CONDITIONS)))
PREFIX_NAMES = ("no_prefix", "motion_prefix")


def motion_lengths(value, latent_frames: int) -> tuple[int, ...]:
    """`objective_opts.motion_frames` (an int or a list of ints) -> the allowed prefix
    lengths, each in [1, latent_frames - 1] (at least one frame must stay noisy)."""
    lengths = tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else (value,)))
    bad = [n for n in lengths if not 0 < n < latent_frames]
    if not lengths or bad:
        raise ValueError(f"objective_opts.motion_frames={value!r}: every prefix length must be in "
                         f"[1, latent_frames - 1 = {latent_frames - 1}]")
    return lengths


# The two LoRA helpers are public: an objective of one's own ("module:Class", see `build`)
# builds its model with them to train under `cfg.lora` like the built-in ones.

def lora_wrap(model: nnx.Module, cfg, rngs: nnx.Rngs) -> nnx.Module:
    """`model` with LoRA adapters on `cfg.lora.targets` when `cfg.lora.rank` > 0."""
    if not cfg.get("lora") or not cfg.lora.get("rank", 0):
        return model
    from omnijax.models import lora
    return lora.apply_lora(model, rank=int(cfg.lora.rank), alpha=float(cfg.lora.alpha),
                           targets=list(cfg.lora.targets), rngs=rngs)


def trainable_filter(cfg):
    """What the optimizer updates: the adapters under LoRA, else every nnx.Param."""
    if cfg.get("lora") and cfg.lora.get("rank", 0):
        from omnijax.models.lora import LoRAParam
        return LoRAParam
    return nnx.Param


# ============================================================================ MMDiT

def pose_channels(names) -> tuple[int, ...]:
    """Keypoint names (config `model.pose_ignore`) -> pose heatmap channels."""
    from omnijax.data import keypoints as kpt
    unknown = [n for n in names if n not in kpt.INDEX]
    if unknown:
        raise ValueError(f"model.pose_ignore names unknown keypoints {unknown}; they are {list(kpt.NAMES)}")
    return tuple(kpt.INDEX[n] for n in names)


class MMDiTObjective:
    name = "mmdit"
    # loss breakdowns the trainer logs: "<key>_loss_sum" / "<key>_count" aux pairs -> names
    breakdowns = {"mix": MIX_NAMES, "prefix": PREFIX_NAMES}

    def __init__(self, cfg):
        from omnijax.models.mmdit import MMDiTConfig
        self.cfg = cfg
        overrides = dict(cfg.model.get("overrides", {}))
        overrides.setdefault("dtype", str(cfg.train.compute_dtype))
        overrides.setdefault("remat", str(cfg.train.remat))
        if cfg.model.get("attention"):
            overrides.setdefault("attention", str(cfg.model.attention))
        overrides.setdefault("pose_ignore", pose_channels(cfg.model.get("pose_ignore", ())))
        self.model_config = MMDiTConfig.preset(cfg.model.size, **overrides)
        d = cfg.data
        self.F, self.h, self.w = int(d.latent_frames), int(d.latent_height), int(d.latent_width)
        if d.get("bucket"):
            # a preprocessed bucket "TxHxW" fixes the latent shape the step is compiled for
            from omnijax.data.schema import parse_bucket
            T, H, W = parse_bucket(str(d.bucket))
            self.F, self.h, self.w = 1 + (T - 1) // 4, H // 8, W // 8
        self.T = 1 + 4 * (self.F - 1)
        mc = self.model_config
        self.Hp = int(round(self.h * 8 * mc.pose_scale))
        self.Wp = int(round(self.w * 8 * mc.pose_scale))
        self.L = int(d.text_len)
        o = cfg.objective_opts
        self.motion_prob = float(o.motion_prob)
        if not 0.0 <= self.motion_prob <= 1.0:
            raise ValueError(f"objective_opts.motion_prob={self.motion_prob} must be in [0, 1]")
        self.motion_lengths = motion_lengths(o.motion_frames, self.F) if self.motion_prob > 0 else ()
        from omnijax.diffusion import flow
        self.shift = flow.resolve_shift(o.t_shift, self.tokens_per_example() - self.L)
        self.trainable = trainable_filter(cfg)

    def base_model_fn(self, rngs: nnx.Rngs) -> nnx.Module:
        from omnijax.models.mmdit import MMDiT
        return MMDiT(self.model_config, rngs=rngs)

    def model_fn(self, rngs: nnx.Rngs) -> nnx.Module:
        return lora_wrap(self.base_model_fn(rngs), self.cfg, rngs)

    def batch_spec(self, B: int) -> dict[str, jax.ShapeDtypeStruct]:
        mc = self.model_config
        f32, b = jnp.float32, jnp.bool_
        S = jax.ShapeDtypeStruct
        spec = {
            "latents": S((B, self.F, self.h, self.w, mc.latent_channels), f32),
            "ref_latent": S((B, 1, self.h, self.w, mc.latent_channels), f32),
            "audio": S((B, self.T, mc.audio_dim), f32),
            "keypoints": S((B, self.T, mc.pose_channels, 3), f32),
            "text": S((B, self.L, mc.text_dim), f32),
            "text_mask": S((B, self.L), b),
            "audio_ok": S((B,), b), "pose_ok": S((B,), b),
        }
        spec.update({f"keep_{c}": S((B,), b) for c in CONDITIONS})
        return spec

    def recipe(self) -> dict:
        """What a sampler must repeat to sample this model as it was trained."""
        o = self.cfg.objective_opts
        return {"flow_shift": self.shift, "t_mean": float(o.t_mean), "t_std": float(o.t_std),
                "latent_frames": self.F, "latent_height": self.h, "latent_width": self.w,
                "motion_frames": list(self.motion_lengths), "motion_prob": self.motion_prob,
                "stage": int(self.cfg.curriculum.stage),
                "keep_ratios": dict(self.cfg.curriculum.get("ratios", {}))}

    def pose_heatmaps(self, keypoints: jax.Array) -> jax.Array:
        """Cached keypoints (B, T, K, 3) -> the guider's heatmaps (B, T, Hp, Wp, K), rendered in
        the step: a record carries 13 x 3 numbers per frame instead of Hp x Wp x 13."""
        from omnijax.data import keypoints as kpt
        return kpt.heatmaps_from_normalized(keypoints, self.Hp, self.Wp, self.model_config.pose_sigma, xp=jnp)

    def draw_prefix(self, key: jax.Array, batch: int) -> jax.Array:
        """(B,) int32 clean prefix lengths: 0 with probability 1 - motion_prob, else one of
        the allowed lengths, uniformly."""
        if not self.motion_lengths:
            return jnp.zeros((batch,), jnp.int32)
        k_use, k_len = jax.random.split(key)
        use = jax.random.bernoulli(k_use, self.motion_prob, (batch,))
        lengths = jnp.asarray(self.motion_lengths, jnp.int32)
        pick = lengths[jax.random.randint(k_len, (batch,), 0, lengths.shape[0])]
        return jnp.where(use, pick, 0)

    def per_sample_loss(self, model, batch, prefix: jax.Array, key: jax.Array) -> jax.Array:
        """Flow-matching loss (B,) over the noisy frames, each sample with its own clean
        prefix of `prefix[i]` latent frames (data, not shape: one compiled step)."""
        from omnijax.diffusion import flow
        o = self.cfg.objective_opts
        x0 = batch["latents"]                                            # (B, F, h, w, c)
        clean = jnp.arange(x0.shape[1])[None] < prefix[:, None]          # (B, F)
        draw = flow.noised(key, x0, mean=float(o.t_mean), std=float(o.t_std), shift=self.shift)
        x_in = jnp.where(clean[:, :, None, None, None], x0, draw["x_t"])
        keep = {c: batch[f"keep_{c}"] for c in CONDITIONS}
        dt = jnp.dtype(self.model_config.dtype)
        pose = self.pose_heatmaps(batch["keypoints"])
        # audio and pose cover the whole window's T video frames: every noisy latent frame
        # gets its own 4 frames plus the adjacent window, whatever the prefix
        pred = model(x_in.astype(dt), draw["t"], clean=clean, ref=batch["ref_latent"].astype(dt),
                     audio=batch["audio"].astype(dt), pose=pose.astype(dt),
                     text=batch["text"].astype(dt), text_mask=batch["text_mask"], keep=keep)
        return flow.per_sample_loss(pred, draw["target"], frame_mask=~clean)

    def loss(self, model, batch, rng):
        k_prefix, k_noise = jax.random.split(rng)
        b = batch["latents"].shape[0]
        prefix = self.draw_prefix(k_prefix, b)
        per = self.per_sample_loss(model, batch, prefix, k_noise)
        code = sum(batch[f"keep_{c}"].astype(jnp.int32) << i for i, c in enumerate(CONDITIONS))
        onehot = jax.nn.one_hot(code, len(MIX_NAMES), dtype=jnp.float32)   # (B, 16)
        has_prefix = jax.nn.one_hot((prefix > 0).astype(jnp.int32), 2, dtype=jnp.float32)
        aux = {"mix_loss_sum": onehot.T @ per, "mix_count": onehot.sum(0),
               "prefix_loss_sum": has_prefix.T @ per, "prefix_count": has_prefix.sum(0),
               "keep_rate/motion": (prefix > 0).astype(jnp.float32).mean()}
        for c in CONDITIONS:
            aux[f"keep_rate/{c}"] = batch[f"keep_{c}"].astype(jnp.float32).mean()
        return per.mean(), aux

    def make_data(self, cfg, mesh):
        return inputs.mmdit_batches(cfg, mesh, self)

    def tokens_per_example(self) -> int:
        ph, pw = self.model_config.patch
        return (self.F + 1) * (self.h // ph) * (self.w // pw) + self.L

    def flops_per_example(self) -> float:
        """Forward + backward = 3 x the per-weight forward count (`flops.mmdit_forward_flops`:
        the text stream's weights meet text tokens only; the one-stream rule of thumb would
        charge them for every token and put a two-stream model above 100% MFU)."""
        if not hasattr(self, "_flops"):
            self._flops = 3.0 * flops.mmdit_forward_flops(self.model_config, self.F + 1, self.F,
                                                          self.h, self.w, self.L)
        return self._flops


# ============================================================================ VAE

def motion_weights(video: jax.Array, strength: float) -> jax.Array:
    """Per-pixel reconstruction weights `(B, T, H, W, 1)` that grow with how much a pixel
    changes from the previous frame: `1 + strength * d / mean(d)`, renormalised to mean 1
    per clip (so the loss keeps its scale and `lr` its meaning). d is the mean absolute RGB
    change, spread over a 3x3 neighbourhood so both sides of a moving edge count; frame 0
    takes frame 1's. Why: a talking person is mostly still, so a plain per-pixel loss spends
    a small VAE's capacity on the static background and shirt, and the mouth (4% of a
    64 px half-body frame, measured at 4.7x the frame's mean squared error) and hands,
    which carry lip-sync and gesture, are what it reconstructs worst. strength 0: uniform."""
    if strength == 0.0 or video.shape[1] < 2:
        return jnp.ones(video.shape[:-1] + (1,), video.dtype)
    d = jnp.abs(video[:, 1:] - video[:, :-1]).mean(-1, keepdims=True)
    d = jnp.concatenate([d[:, :1], d], axis=1)
    d = jax.lax.reduce_window(d, -jnp.inf, jax.lax.max, (1, 1, 3, 3, 1), (1,) * 5, "SAME")
    w = 1.0 + strength * d / (d.mean(axis=(1, 2, 3, 4), keepdims=True) + 1e-6)
    return jax.lax.stop_gradient(w / w.mean(axis=(1, 2, 3, 4), keepdims=True))


class VAEObjective:
    name = "vae"
    breakdowns: dict = {}

    def __init__(self, cfg):
        from omnijax.models.vae import VAEConfig
        self.cfg = cfg
        # model.size names a preset; any other model.<field> replaces that VAEConfig field
        # (e.g. model.decoder_base_dim: a wider decoder than encoder)
        overrides = {k: v for k, v in cfg.model.items() if k != "size"}
        self.model_config = VAEConfig.preset(cfg.model.size).replace(**overrides)
        d = cfg.data
        self.T, self.H, self.W = int(d.frames), int(d.height), int(d.width)
        if (self.T - 1) % 4 or self.H % 8 or self.W % 8:
            raise ValueError(f"VAE training clips need T = 1 + 4k frames and H, W multiples of 8, "
                             f"got {self.T}x{self.H}x{self.W}")
        self.trainable = trainable_filter(cfg)

    def recipe(self) -> dict:
        return {"frames": self.T, "height": self.H, "width": self.W}

    def base_model_fn(self, rngs: nnx.Rngs) -> nnx.Module:
        from omnijax.models.vae import CausalVAE
        return CausalVAE(self.model_config, rngs=rngs)

    def model_fn(self, rngs: nnx.Rngs) -> nnx.Module:
        return lora_wrap(self.base_model_fn(rngs), self.cfg, rngs)

    def batch_spec(self, B: int) -> dict[str, jax.ShapeDtypeStruct]:
        return {"video": jax.ShapeDtypeStruct((B, self.T, self.H, self.W, 3), jnp.float32)}

    def loss(self, model, batch, rng):
        o = self.cfg.objective_opts
        video = batch["video"]
        mean, logvar = model.moments(video)
        # "sample": the VAE objective (decode a posterior draw). "mean": decode the posterior
        # mean, a deterministic autoencoder with a KL leash on the latents' scale: on a short
        # CPU budget it learns ~1.5 dB faster, since the decoder never sees the unit-variance
        # noise the posterior starts with (measured on SynthTalk, 17-frame clips).
        noise = jax.random.normal(rng, mean.shape, mean.dtype)
        sample = 1.0 if str(o.get("posterior", "sample")) == "sample" else 0.0
        z = mean + sample * jnp.exp(0.5 * logvar) * noise
        video = video.astype(jnp.float32)
        rec = model.reconstruct(z, clamp=False).astype(jnp.float32)
        err = rec - video
        w = motion_weights(video, float(o.get("motion_weight", 0.0)))
        l1 = (w * jnp.abs(err)).mean()
        l2 = (w * jnp.square(err)).mean()
        kl = 0.5 * (jnp.square(mean.astype(jnp.float32)) + jnp.exp(logvar.astype(jnp.float32))
                    - 1.0 - logvar.astype(jnp.float32)).mean()
        loss = float(o.l1_weight) * l1 + float(o.l2_weight) * l2 + float(o.kl_weight) * kl
        return loss, {"recon_l1": l1, "recon_l2": l2, "kl": kl}

    def make_data(self, cfg, mesh):
        return inputs.vae_batches(cfg, mesh, self)

    def tokens_per_example(self) -> int:
        # latent positions produced per clip (the VAE's "tokens")
        return (1 + (self.T - 1) // 4) * (self.H // 8) * (self.W // 8)

    def flops_per_example(self) -> float:
        """XLA's count of one encode + decode, x 3 for forward + backward."""
        if not hasattr(self, "_flops"):
            def forward(model, video):
                mean, _ = model.moments(video)
                return model.reconstruct(mean, clamp=False)
            video = jax.ShapeDtypeStruct((1, self.T, self.H, self.W, 3), jnp.float32)
            self._flops = flops.xla_flops(self.model_fn, forward, video)
        return self._flops


OBJECTIVES = {"mmdit": MMDiTObjective, "vae": VAEObjective}


def build(cfg):
    """`cfg.objective` is a name in OBJECTIVES or "package.module:Class" (a user objective
    with the same interface, e.g. a new model trained by this loop)."""
    name = str(cfg.objective)
    if ":" in name:
        import importlib
        module, cls = name.split(":", 1)
        return getattr(importlib.import_module(module), cls)(cfg)
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {sorted(OBJECTIVES)} or 'module:Class', "
                         f"got {name!r}")
    return OBJECTIVES[name](cfg)
