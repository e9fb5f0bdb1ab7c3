"""wav2vec2 speech encoder in Flax NNX, loaded from HF-format safetensors directories.

Covers both published families:
  * base style (wav2vec2-base, -base-960h): group-norm conv feature extractor
    (`feat_extract_norm="group"`), post-norm transformer layers (`do_stable_layer_norm=False`);
  * large style (wav2vec2-large-lv60, XLSR): layer-norm conv stack with conv bias, pre-norm
    ("stable layer norm") layers and a final layer norm.

The model returns every hidden state as transformers' `output_hidden_states` does (index 0 is
the input of the first transformer layer: feature projection + positional conv embedding,
then the layer norm in the post-norm variant; entry i is layer i's output; in the pre-norm
variant the final layer norm is *not* in the list but in `last_hidden_state`). Padded batches
take `attention_mask (B, N)` over samples, reduced to frames as transformers does.

`audio_encoder_from_spec` wraps it in the omnijax audio-encoder interface
(`omnijax.models.encoders.base.AudioEncoder`): waveform -> `(T, D)` at the video frame rate.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import shutil
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from omnijax.models.encoders import hf_checkpoint as hf

KIND = "wav2vec2"


# ----------------------------------------------------------------------------- config

@dataclasses.dataclass(frozen=True)
class Wav2Vec2Config:
    """The fields of an HF `Wav2Vec2Config` that the encoder uses (defaults: wav2vec2-base)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    feat_extract_norm: str = "group"  # "group" (base) | "layer" (large / XLSR)
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    do_stable_layer_norm: bool = False  # False: post-norm layers; True: pre-norm + final norm
    layer_norm_eps: float = 1e-5
    # from preprocessor_config.json: zero-mean / unit-variance per clip before the model
    do_normalize: bool = True
    sampling_rate: int = 16000

    def __post_init__(self):
        object.__setattr__(self, "conv_dim", tuple(self.conv_dim))
        object.__setattr__(self, "conv_kernel", tuple(self.conv_kernel))
        object.__setattr__(self, "conv_stride", tuple(self.conv_stride))
        where = "Wav2Vec2Config"
        if self.feat_extract_norm not in ("group", "layer"):
            raise ValueError(f"{where}: unsupported feat_extract_norm {self.feat_extract_norm!r}; "
                             "expected 'group' (base models) or 'layer' (large / XLSR models)")
        if not len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride):
            raise ValueError(f"{where}: conv_dim, conv_kernel and conv_stride must have equal lengths, got "
                             f"{len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"{where}: hidden_size {self.hidden_size} is not divisible by "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise ValueError(f"{where}: hidden_size {self.hidden_size} is not divisible by "
                             f"num_conv_pos_embedding_groups {self.num_conv_pos_embedding_groups}")
        hf.activation(self.hidden_act, where=f"{where}.hidden_act")
        hf.activation(self.feat_extract_activation, where=f"{where}.feat_extract_activation")

    @property
    def frame_stride(self) -> int:
        """Samples per output frame (320 for every published model: 50 Hz at 16 kHz)."""
        return int(np.prod(self.conv_stride))

    @property
    def frame_rate(self) -> float:
        return self.sampling_rate / self.frame_stride

    def num_frames(self, num_samples):
        """Output frames for `num_samples` input samples (transformers' conv length formula)."""
        n = num_samples
        for k, s in zip(self.conv_kernel, self.conv_stride):
            n = (n - k) // s + 1
        return n

    @classmethod
    def from_hf(cls, cfg: dict, preprocessor: dict | None = None, *, source: str = "config.json"):
        """From an HF config dict; refuses the options this port does not implement."""
        if cfg.get("model_type", "wav2vec2") != "wav2vec2":
            raise ValueError(f"{source}: model_type is {cfg.get('model_type')!r}, expected 'wav2vec2'")
        for flag, why in (("add_adapter", "the output adapter"), ("adapter_attn_dim", "attention adapters")):
            if cfg.get(flag):
                raise ValueError(f"{source}: {flag}={cfg[flag]!r} ({why}) is not supported by omnijax's wav2vec2")
        if cfg.get("position_embeddings_type", "conv") not in (None, "conv"):
            raise ValueError(f"{source}: position_embeddings_type {cfg['position_embeddings_type']!r} unsupported")
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in cfg.items() if k in names and k not in ("do_normalize", "sampling_rate")}
        if "feat_extract_norm" in cfg and cfg["feat_extract_norm"] not in ("group", "layer"):
            raise ValueError(f"{source}: unsupported feat_extract_norm {cfg['feat_extract_norm']!r}; "
                             "expected 'group' (base models) or 'layer' (large / XLSR models)")
        pre = preprocessor or {}
        kw["do_normalize"] = bool(pre.get("do_normalize", True))
        kw["sampling_rate"] = int(pre.get("sampling_rate", 16000))
        try:
            return cls(**kw)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None


# ----------------------------------------------------------------------------- modules

def _layer_norm(dim: int, eps: float, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # Two-pass variance, as torch computes it: the fast E[x^2]-E[x]^2 form loses digits.
    return nnx.LayerNorm(dim, epsilon=eps, use_fast_variance=False, rngs=rngs)


class FeatureConv(nnx.Module):
    """One conv of the feature extractor: conv -> [group norm | layer norm | nothing] -> activation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, norm: str | None, cfg: Wav2Vec2Config,
                 rngs: nnx.Rngs):
        self.stride = stride
        self.norm = norm
        self.conv = nnx.Conv(cin, cout, (kernel,), strides=(stride,), padding="VALID", use_bias=cfg.conv_bias,
                             rngs=rngs)
        if norm == "group":  # GroupNorm(groups = channels): per-channel statistics over time
            self.scale = nnx.Param(jnp.ones((cout,)))
            self.bias = nnx.Param(jnp.zeros((cout,)))
        elif norm == "layer":
            self.layer_norm = _layer_norm(cout, 1e-5, rngs)  # torch default eps here, not the config's
        self.act = hf.activation(cfg.feat_extract_activation, where="feat_extract_activation")

    def __call__(self, x: jax.Array, valid: jax.Array | None) -> jax.Array:
        x = self.conv(x)  # (B, T, C)
        if self.norm == "group":
            # transformers normalises over the whole (padded) length; `valid` (B, T) restricts the
            # statistics to real frames so a padded clip gives what the clip alone gives.
            w = jnp.ones(x.shape[:2] + (1,), x.dtype) if valid is None else valid[..., None].astype(x.dtype)
            count = jnp.maximum(w.sum(axis=1, keepdims=True), 1.0)
            mean = (x * w).sum(axis=1, keepdims=True) / count
            var = (jnp.square(x - mean) * w).sum(axis=1, keepdims=True) / count
            x = (x - mean) * jax.lax.rsqrt(var + 1e-5) * self.scale[...] + self.bias[...]
        elif self.norm == "layer":
            x = self.layer_norm(x)
        return self.act(x)


class PositionalConv(nnx.Module):
    """Grouped conv over time with weight norm (g per kernel tap, as torch's `weight_norm(dim=2)`)."""

    def __init__(self, cfg: Wav2Vec2Config, rngs: nnx.Rngs):
        k, d, g = cfg.num_conv_pos_embeddings, cfg.hidden_size, cfg.num_conv_pos_embedding_groups
        self.kernel_size, self.groups = k, g
        init = jax.nn.initializers.normal(1.0 / math.sqrt(k * d // g))
        self.weight_v = nnx.Param(init(rngs.params(), (k, d // g, d)))  # (K, C/groups, C)
        self.weight_g = nnx.Param(jnp.ones((k,)))
        self.bias = nnx.Param(jnp.zeros((d,)))
        self.act = hf.activation(cfg.feat_extract_activation, where="feat_extract_activation")

    def __call__(self, x: jax.Array) -> jax.Array:
        v = self.weight_v[...]
        norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True))
        w = (v * (self.weight_g[...][:, None, None] / norm)).astype(x.dtype)
        pad = self.kernel_size // 2
        y = jax.lax.conv_general_dilated(
            x, w, window_strides=(1,), padding=((pad, pad),), dimension_numbers=("NWC", "WIO", "NWC"),
            feature_group_count=self.groups)
        y = y[:, : x.shape[1]] + self.bias[...]  # an even kernel yields one extra frame: drop it
        return self.act(y)


class SelfAttention(nnx.Module):
    def __init__(self, dim: int, heads: int, rngs: nnx.Rngs):
        self.heads = heads
        self.q_proj = nnx.Linear(dim, dim, rngs=rngs)
        self.k_proj = nnx.Linear(dim, dim, rngs=rngs)
        self.v_proj = nnx.Linear(dim, dim, rngs=rngs)
        self.out_proj = nnx.Linear(dim, dim, rngs=rngs)

    def __call__(self, x: jax.Array, key_mask: jax.Array | None) -> jax.Array:
        b, t, d = x.shape
        split = lambda y: y.reshape(b, t, self.heads, d // self.heads)  # noqa: E731
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        mask = None if key_mask is None else key_mask[:, None, None, :]  # (B, 1, 1, T) over keys
        out = jax.nn.dot_product_attention(q, k, v, mask=mask)
        return self.out_proj(out.reshape(b, t, d))


class EncoderLayer(nnx.Module):
    """Transformer layer; `pre_norm` selects the stable-layer-norm (large) arrangement."""

    def __init__(self, cfg: Wav2Vec2Config, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.pre_norm = cfg.do_stable_layer_norm
        self.attention = SelfAttention(d, cfg.num_attention_heads, rngs)
        self.layer_norm = _layer_norm(d, cfg.layer_norm_eps, rngs)
        self.intermediate_dense = nnx.Linear(d, cfg.intermediate_size, rngs=rngs)
        self.output_dense = nnx.Linear(cfg.intermediate_size, d, rngs=rngs)
        self.final_layer_norm = _layer_norm(d, cfg.layer_norm_eps, rngs)
        self.act = hf.activation(cfg.hidden_act, where="hidden_act")

    def _mlp(self, x):
        return self.output_dense(self.act(self.intermediate_dense(x)))

    def __call__(self, x: jax.Array, key_mask: jax.Array | None) -> jax.Array:
        if self.pre_norm:
            x = x + self.attention(self.layer_norm(x), key_mask)
            return x + self._mlp(self.final_layer_norm(x))
        x = self.layer_norm(x + self.attention(x, key_mask))
        return self.final_layer_norm(x + self._mlp(x))


class Wav2Vec2Model(nnx.Module):
    """Waveform `(B, N)` at 16 kHz -> hidden states, each `(B, T, hidden_size)` at 50 Hz."""

    def __init__(self, config: Wav2Vec2Config, *, rngs: nnx.Rngs = None):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        cfg = self.config = config
        convs, cin = [], 1
        for i, (c, k, s) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)):
            norm = "layer" if cfg.feat_extract_norm == "layer" else ("group" if i == 0 else None)
            convs.append(FeatureConv(cin, c, k, s, norm, cfg, rngs))
            cin = c
        self.conv_layers = nnx.List(convs)
        self.projection_norm = _layer_norm(cin, cfg.layer_norm_eps, rngs)
        self.projection = nnx.Linear(cin, cfg.hidden_size, rngs=rngs)
        self.pos_conv = PositionalConv(cfg, rngs)
        self.encoder_norm = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, rngs)
        self.layers = nnx.List([EncoderLayer(cfg, rngs) for _ in range(cfg.num_hidden_layers)])

    def frame_mask(self, attention_mask: jax.Array, num_frames: int) -> jax.Array:
        """Sample mask `(B, N)` -> frame mask `(B, T)`: the first conv_out(len) frames are real."""
        lengths = self.config.num_frames(jnp.sum(attention_mask.astype(jnp.int32), axis=-1))
        return jnp.arange(num_frames)[None, :] < lengths[:, None]

    def forward(self, wave: jax.Array, attention_mask: jax.Array | None = None, *,
                exact_group_norm: bool = False) -> tuple[list[jax.Array], jax.Array]:
        """Jitted `encode` (one compile per input shape; eager op-by-op dispatch is ~5x slower)."""
        return _jit_encode(self, wave, attention_mask, exact_group_norm=exact_group_norm)

    def encode(self, wave: jax.Array, attention_mask: jax.Array | None = None, *,
               exact_group_norm: bool = False) -> tuple[list[jax.Array], jax.Array]:
        """-> (hidden_states: num_hidden_layers + 1 arrays `(B, T, D)`, last_hidden_state `(B, T, D)`).

        `exact_group_norm`: with a mask, compute the first conv's group-norm statistics over
        real samples only (transformers uses the padded length, so its padded-batch outputs
        differ from per-clip outputs for group-norm models; this makes them agree).
        """
        cfg = self.config
        if wave.ndim != 2:
            raise ValueError(f"wav2vec2 expects a waveform batch (B, N), got shape {wave.shape}")
        if wave.shape[1] < cfg.conv_kernel[0]:
            raise ValueError(f"waveform of {wave.shape[1]} samples is shorter than one wav2vec2 frame")
        if attention_mask is not None and attention_mask.shape != wave.shape:
            raise ValueError(f"attention_mask {attention_mask.shape} must match the waveform {wave.shape}")
        x = wave.astype(jnp.float32)[..., None]  # (B, N, 1)
        first_valid = None
        if attention_mask is not None and exact_group_norm:
            lengths = jnp.sum(attention_mask.astype(jnp.int32), axis=-1)
            n0 = (wave.shape[1] - cfg.conv_kernel[0]) // cfg.conv_stride[0] + 1
            len0 = (lengths - cfg.conv_kernel[0]) // cfg.conv_stride[0] + 1
            first_valid = jnp.arange(n0)[None, :] < len0[:, None]
        for i, conv in enumerate(self.conv_layers):
            x = conv(x, first_valid if i == 0 else None)
        h = self.projection(self.projection_norm(x))  # (B, T, D)
        key_mask = None
        if attention_mask is not None:
            key_mask = self.frame_mask(attention_mask, h.shape[1])
            h = jnp.where(key_mask[..., None], h, 0.0)  # padded frames enter the pos conv as zeros
        h = h + self.pos_conv(h)
        if not cfg.do_stable_layer_norm:
            h = self.encoder_norm(h)
        hidden = [h]
        for layer in self.layers:
            h = layer(h, key_mask)
            hidden.append(h)
        last = self.encoder_norm(h) if cfg.do_stable_layer_norm else h
        return hidden, last

    def __call__(self, wave: jax.Array, attention_mask: jax.Array | None = None) -> list[jax.Array]:
        """All hidden states, as transformers' `output_hidden_states=True` returns them."""
        return self.forward(wave, attention_mask)[0]


_jit_encode = nnx.jit(Wav2Vec2Model.encode, static_argnames=("exact_group_norm",))


# ----------------------------------------------------------------------------- loading

_PREFIXES = ("wav2vec2.",)  # keys of Wav2Vec2ForCTC / ForPreTraining checkpoints


def _hf_weights(cfg: Wav2Vec2Config, t: dict[str, np.ndarray]) -> dict[tuple, object]:
    """Our parameter path -> thunk reading the HF tensor (with its layout change)."""
    w: dict[tuple, object] = {}
    lin, conv = hf.linear_kernel, hf.conv1d_kernel
    for i in range(len(cfg.conv_dim)):
        p = f"feature_extractor.conv_layers.{i}."
        w[("conv_layers", i, "conv", "kernel")] = hf.getter(t, p + "conv.weight", transform=conv)
        w[("conv_layers", i, "conv", "bias")] = hf.getter(t, p + "conv.bias")
        if cfg.feat_extract_norm == "group" and i == 0:
            w[("conv_layers", i, "scale")] = hf.getter(t, p + "layer_norm.weight")
            w[("conv_layers", i, "bias")] = hf.getter(t, p + "layer_norm.bias")
        w[("conv_layers", i, "layer_norm", "scale")] = hf.getter(t, p + "layer_norm.weight")
        w[("conv_layers", i, "layer_norm", "bias")] = hf.getter(t, p + "layer_norm.bias")
    w[("projection_norm", "scale")] = hf.getter(t, "feature_projection.layer_norm.weight")
    w[("projection_norm", "bias")] = hf.getter(t, "feature_projection.layer_norm.bias")
    w[("projection", "kernel")] = hf.getter(t, "feature_projection.projection.weight", transform=lin)
    w[("projection", "bias")] = hf.getter(t, "feature_projection.projection.bias")
    pc = "encoder.pos_conv_embed.conv."
    # torch >= 2.1 parametrizations (original0 = g, original1 = v) or the older weight_g / weight_v
    w[("pos_conv", "weight_g")] = hf.getter(t, pc + "parametrizations.weight.original0", pc + "weight_g",
                                            transform=lambda g: g.reshape(-1))
    w[("pos_conv", "weight_v")] = hf.getter(t, pc + "parametrizations.weight.original1", pc + "weight_v",
                                            transform=conv)
    w[("pos_conv", "bias")] = hf.getter(t, pc + "bias")
    w[("encoder_norm", "scale")] = hf.getter(t, "encoder.layer_norm.weight")
    w[("encoder_norm", "bias")] = hf.getter(t, "encoder.layer_norm.bias")
    for i in range(cfg.num_hidden_layers):
        p = f"encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w[("layers", i, "attention", name, "kernel")] = hf.getter(t, p + f"attention.{name}.weight",
                                                                      transform=lin)
            w[("layers", i, "attention", name, "bias")] = hf.getter(t, p + f"attention.{name}.bias")
        for name in ("intermediate_dense", "output_dense"):
            w[("layers", i, name, "kernel")] = hf.getter(t, p + f"feed_forward.{name}.weight", transform=lin)
            w[("layers", i, name, "bias")] = hf.getter(t, p + f"feed_forward.{name}.bias")
        for name in ("layer_norm", "final_layer_norm"):
            w[("layers", i, name, "scale")] = hf.getter(t, p + f"{name}.weight")
            w[("layers", i, name, "bias")] = hf.getter(t, p + f"{name}.bias")
    return w


def config_from_hf_dir(path: str | os.PathLike) -> Wav2Vec2Config:
    path = os.fspath(path)
    pre_file = os.path.join(path, "preprocessor_config.json")
    pre = hf.read_json(pre_file) if os.path.isfile(pre_file) else None
    cfg_file = os.path.join(path, "config.json")
    return Wav2Vec2Config.from_hf(hf.read_json(cfg_file), pre, source=cfg_file)


def _config_from_dict(d: dict) -> Wav2Vec2Config:
    return Wav2Vec2Config(**d)


def load_wav2vec2(path: str | os.PathLike, *, dtype=jnp.float32) -> Wav2Vec2Model:
    """Load from an HF-format directory (config.json + model.safetensors [+ preprocessor_config.json])
    or from an omnijax orbax directory written by `convert_to_orbax`."""
    path = os.fspath(path)
    if hf.is_omnijax_dir(path):
        from omnijax.module_io import load_module

        return hf.cast_floats(load_module(path, lambda d: Wav2Vec2Model(_config_from_dict(d)), kind=KIND), dtype)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"wav2vec2 checkpoint directory {path} does not exist")
    cfg = config_from_hf_dir(path)
    files = hf.safetensors_files(path)  # refuses pickles before anything is read
    tensors = hf.read_safetensors(path, _PREFIXES)
    return hf.fill_module(lambda: Wav2Vec2Model(cfg), _hf_weights(cfg, tensors),
                          source=", ".join(files), dtype=dtype)


def convert_to_orbax(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False) -> str:
    """HF wav2vec2 directory -> omnijax orbax directory (`omnijax convert wav2vec2 SRC DST`)."""
    from omnijax.module_io import save_module

    model = load_wav2vec2(src)
    out = save_module(dst, model, model.config, kind=KIND, overwrite=overwrite)
    pre = os.path.join(os.fspath(src), "preprocessor_config.json")
    if os.path.isfile(pre):  # kept for reference; the fields that matter are in config.json
        shutil.copy(pre, os.path.join(os.fspath(out), "preprocessor_config.json"))
    return os.fspath(out)


# ----------------------------------------------------------------------------- audio encoder

def parse_layers(spec, num_hidden_layers: int) -> tuple[int, ...] | str:
    """'all' | 'last' | 'N' | 'A-B' (inclusive) | 'A+B+C' -> hidden-state indices or 'last'.

    Index 0 is the transformer input, i the output of layer i (as in `output_hidden_states`);
    'last' is `last_hidden_state` (for pre-norm models: after the final layer norm).
    """
    n = num_hidden_layers
    s = str(spec).strip().lower()
    if s == "last":
        return "last"
    if s == "all":
        return tuple(range(n + 1))
    try:
        if "-" in s:
            a, b = (int(v) for v in s.split("-"))
            out = tuple(range(a, b + 1))
        else:
            out = tuple(int(v) for v in s.split("+"))
    except ValueError:
        raise ValueError(f"wav2vec2 layers={spec!r}: expected all, last, N, A-B or A+B+C") from None
    if not out or min(out) < 0 or max(out) > n:
        raise ValueError(f"wav2vec2 layers={spec!r}: hidden states are numbered 0..{n} for this model")
    return out


@functools.partial(jax.jit, static_argnames=("graphdef", "layers", "reduce"))
def _encode_selected(graphdef, state, wave, mask, *, layers, reduce):
    """(B, N) wave + mask -> (B, T, dim) selected hidden states; compiled once per config and shape."""
    model = nnx.merge(graphdef, state)
    hidden, last = model.encode(wave, mask, exact_group_norm=True)
    if layers == "last":
        return last
    picked = [hidden[i] for i in layers]
    return jnp.concatenate(picked, -1) if reduce == "concat" else jnp.mean(jnp.stack(picked), 0)


class Wav2Vec2AudioEncoder:
    """The audio-encoder interface over a wav2vec2 model: wave -> `(num_frames, D)` at the video rate.

    Audio is resampled to the model's rate and normalised per clip when the checkpoint's
    preprocessor asks for it. A clip up to `chunk_seconds` long is zero-padded to a multiple
    of `bucket_seconds` (few lengths ever compile) with the padding masked out exactly, so
    the features equal those of the clip alone. Longer clips (attention cost is quadratic in
    length) are cut into `chunk_seconds` windows that each see `context_seconds` more audio
    on both sides; every window is padded to the same length, so a clip of any length
    compiles once. Selected hidden states are concatenated (`reduce=concat`, D = hidden x
    layers) or averaged (`reduce=mean`), then pooled from the encoder rate (50 Hz) to the video rate.
    """

    def __init__(self, model: Wav2Vec2Model, *, layers="last", reduce: str = "concat",
                 bucket_seconds: float = 2.0, chunk_seconds: float = 60.0, context_seconds: float = 2.0,
                 name: str = "wav2vec2"):
        cfg = model.config
        self.model, self.config, self.name = model, cfg, name
        self.layers = parse_layers(layers, cfg.num_hidden_layers)
        if reduce not in ("concat", "mean"):
            raise ValueError(f"wav2vec2 reduce={reduce!r}: expected concat or mean")
        self.reduce = reduce
        n_sel = 1 if self.layers == "last" else len(self.layers)
        self.dim = cfg.hidden_size * (n_sel if reduce == "concat" else 1)
        stride = cfg.frame_stride
        to_samples = lambda sec: int(round(sec * cfg.sampling_rate / stride)) * stride  # noqa: E731
        self.chunk = max(stride, to_samples(chunk_seconds))
        self.bucket = min(self.chunk, max(stride, to_samples(bucket_seconds)))
        self.context = to_samples(context_seconds)
        self._graphdef, self._state = nnx.split(model)

    def _run(self, piece: np.ndarray, length: int) -> np.ndarray:
        """`piece` zero-padded to `length` samples -> `(num_frames(length), dim)`, padding masked."""
        buf = np.zeros((1, length), np.float32)
        buf[0, : piece.shape[0]] = piece
        mask = np.zeros((1, length), bool)
        mask[0, : piece.shape[0]] = True
        out = _encode_selected(self._graphdef, self._state, buf, mask, layers=self.layers, reduce=self.reduce)
        return np.asarray(out)[0]

    def encoder_features(self, wave: np.ndarray) -> np.ndarray:
        """Mono waveform (N,) at the model's rate (already normalised) -> `(num_frames(N), dim)`
        at the encoder rate (`config.frame_rate`, 50 Hz for published models)."""
        cfg = self.config
        n = wave.shape[0]
        total = int(cfg.num_frames(n))
        if total <= 0:
            raise ValueError(f"audio of {n} samples is shorter than one wav2vec2 frame ({cfg.conv_kernel[0]})")
        if n <= self.chunk:
            return self._run(wave, -(-n // self.bucket) * self.bucket)[:total]
        stride = cfg.frame_stride
        window = self.chunk + 2 * self.context
        out = np.zeros((total, self.dim), np.float32)
        for start in range(0, n, self.chunk):  # start, lo: multiples of the frame stride
            lo = max(0, start - self.context)
            feats = self._run(wave[lo: min(n, start + self.chunk + self.context)], window)
            f0, f1 = start // stride, min(total, (start + self.chunk) // stride)
            out[f0:f1] = feats[f0 - lo // stride: f1 - lo // stride]
        return out

    def __call__(self, wave: np.ndarray, sample_rate: int, fps: float,
                 num_frames: int | None = None) -> np.ndarray:
        from omnijax.models.encoders.base import frames_in, mono_waveform, to_video_rate

        sr = self.config.sampling_rate
        wave = mono_waveform(wave, sample_rate, sr)
        if self.config.do_normalize:  # Wav2Vec2FeatureExtractor's per-clip standardisation
            wave = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
        if num_frames is None:
            num_frames = frames_in(wave.shape[0], sr, fps)
        return to_video_rate(self.encoder_features(wave), self.config.frame_rate, fps, num_frames)


def audio_encoder_from_spec(path: str | None, **opts) -> Wav2Vec2AudioEncoder:
    """`wav2vec2:PATH[:layers=all|last|8-12,reduce=concat|mean,bucket_seconds=2,chunk_seconds=60,
    context_seconds=2,dtype=float32|bfloat16]`."""
    if not path:
        raise ValueError("wav2vec2 audio encoder needs a checkpoint directory: 'wav2vec2:PATH[:layers=...]'")
    known = {"layers", "reduce", "bucket_seconds", "chunk_seconds", "context_seconds", "dtype"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ValueError(f"wav2vec2 spec: unknown options {unknown}; known: {sorted(known)}")
    dtype = hf.parse_dtype(opts.pop("dtype", "float32"), where="wav2vec2 spec")
    return Wav2Vec2AudioEncoder(load_wav2vec2(path, dtype=dtype), **opts)


__all__: Sequence[str] = ("Wav2Vec2Config", "Wav2Vec2Model", "Wav2Vec2AudioEncoder", "load_wav2vec2",
                          "convert_to_orbax", "audio_encoder_from_spec", "parse_layers")
