"""T5 and umT5 text encoders in Flax NNX, loaded from HF-format safetensors directories.

The two differ in one place: T5 computes the relative-position attention bias in layer 0
and shares it with every layer; umT5 (Wan2.1's text encoder) gives every layer its own
bias table. Both: RMS layer norm without mean or bias, unscaled dot-product attention
(the scale is folded into the weights), relu (`feed_forward_proj="relu"`, original T5) or
gated-gelu (T5 v1.1, umT5) feed-forwards, pre-norm residual blocks and a final norm.

`load_t5(path)(input_ids, attention_mask)` returns the last hidden state `(B, L, D)`.
`text_encoder_from_spec` adds the tokenizer from the same directory and gives the omnijax
text-encoder interface: strings -> states `(B, L, D)` + mask `(B, L)`.
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
from omnijax.models.encoders.tokenizer import TOKENIZER_FILES, T5Tokenizer

KIND = "t5"


# ----------------------------------------------------------------------------- config

@dataclasses.dataclass(frozen=True)
class T5Config:
    """The encoder fields of an HF `T5Config` / `UMT5Config` (defaults: t5-small)."""

    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"  # "relu" | "gated-gelu" | "{act}" | "gated-{act}"
    per_layer_position_bias: bool = False  # True for umT5
    model_type: str = "t5"

    def __post_init__(self):
        hf.activation(self.activation, where=f"feed_forward_proj {self.feed_forward_proj!r}")
        parts = self.feed_forward_proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise ValueError(f"unsupported feed_forward_proj {self.feed_forward_proj!r}; "
                             "expected 'relu', 'gated-gelu', 'ACT' or 'gated-ACT'")

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def activation(self) -> str:
        # HF maps "gated-gelu" to the tanh GELU ("gelu_new"), as the original T5 v1.1 code did.
        return "gelu_new" if self.feed_forward_proj == "gated-gelu" else self.feed_forward_proj.split("-")[-1]

    @classmethod
    def from_hf(cls, cfg: dict, *, source: str = "config.json") -> "T5Config":
        model_type = cfg.get("model_type", "t5")
        if model_type not in ("t5", "umt5", "mt5"):
            raise ValueError(f"{source}: model_type is {model_type!r}, expected 't5', 'mt5' or 'umt5'")
        names = {f.name for f in dataclasses.fields(cls)} - {"per_layer_position_bias", "model_type"}
        kw = {k: v for k, v in cfg.items() if k in names}
        try:
            return cls(**kw, per_layer_position_bias=model_type == "umt5", model_type=model_type)
        except ValueError as e:
            raise ValueError(f"{source}: {e}") from None


# ----------------------------------------------------------------------------- position buckets

def relative_position_buckets(query_len: int, key_len: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bidirectional T5 buckets `(query_len, key_len)` int32 (mesh-tensorflow's scheme).

    Half the buckets for each direction; within one, exact buckets below num_buckets/4 and
    logarithmic ones up to max_distance. Computed in float32 NumPy like torch does, at trace
    time (shapes are static), so the table is a constant of the compiled program.
    """
    rel = np.arange(key_len)[None, :] - np.arange(query_len)[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    dist = np.abs(rel)
    max_exact = half // 2
    # distance 0 would give log(0); those entries take the exact branch below anyway.
    ratio = np.maximum(dist, 1).astype(np.float32) / np.float32(max_exact)
    log_ratio = np.log(ratio) / np.float32(math.log(max_distance / max_exact))
    large = max_exact + (log_ratio * np.float32(half - max_exact)).astype(np.int64)
    large = np.minimum(large, half - 1)
    return (buckets + np.where(dist < max_exact, dist, large)).astype(np.int32)


# ----------------------------------------------------------------------------- modules

class RMSNorm(nnx.Module):
    """T5 layer norm: scale by the root mean square, no mean subtraction, no bias."""

    def __init__(self, dim: int, eps: float):
        self.eps = eps
        self.scale = nnx.Param(jnp.ones((dim,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        var = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=-1, keepdims=True)
        return (x * jax.lax.rsqrt(var + self.eps)).astype(self.scale.dtype) * self.scale[...]


class Attention(nnx.Module):
    def __init__(self, cfg: T5Config, has_bias_table: bool, rngs: nnx.Rngs):
        inner = cfg.num_heads * cfg.d_kv
        self.cfg = cfg
        lin = lambda i, o: nnx.Linear(i, o, use_bias=False, rngs=rngs)  # noqa: E731
        self.q, self.k, self.v, self.o = lin(cfg.d_model, inner), lin(cfg.d_model, inner), \
            lin(cfg.d_model, inner), lin(inner, cfg.d_model)
        if has_bias_table:
            self.relative_attention_bias = nnx.Embed(cfg.relative_attention_num_buckets, cfg.num_heads, rngs=rngs)

    def position_bias(self, length: int) -> jax.Array:
        """`(1, H, L, L)` additive bias from this layer's bucket table."""
        buckets = relative_position_buckets(length, length, self.cfg.relative_attention_num_buckets,
                                            self.cfg.relative_attention_max_distance)
        return jnp.transpose(self.relative_attention_bias(jnp.asarray(buckets)), (2, 0, 1))[None]

    def __call__(self, x: jax.Array, bias: jax.Array, key_mask: jax.Array | None) -> jax.Array:
        b, t, _ = x.shape
        h, dk = self.cfg.num_heads, self.cfg.d_kv
        q, k, v = (p(x).reshape(b, t, h, dk) for p in (self.q, self.k, self.v))
        mask = None if key_mask is None else key_mask[:, None, None, :]
        # T5 does not scale q.k: the 1/sqrt(d) lives in the initialisation of q.
        out = jax.nn.dot_product_attention(q, k, v, bias=bias.astype(q.dtype), mask=mask, scale=1.0)
        return self.o(out.reshape(b, t, h * dk))


class FeedForward(nnx.Module):
    def __init__(self, cfg: T5Config, rngs: nnx.Rngs):
        self.gated = cfg.gated
        lin = lambda i, o: nnx.Linear(i, o, use_bias=False, rngs=rngs)  # noqa: E731
        if cfg.gated:
            self.wi_0, self.wi_1 = lin(cfg.d_model, cfg.d_ff), lin(cfg.d_model, cfg.d_ff)
        else:
            self.wi = lin(cfg.d_model, cfg.d_ff)
        self.wo = lin(cfg.d_ff, cfg.d_model)
        self.act = hf.activation(cfg.activation, where="feed_forward_proj")

    def __call__(self, x: jax.Array) -> jax.Array:
        hidden = self.act(self.wi_0(x)) * self.wi_1(x) if self.gated else self.act(self.wi(x))
        return self.wo(hidden)


class Block(nnx.Module):
    def __init__(self, cfg: T5Config, has_bias_table: bool, rngs: nnx.Rngs):
        self.attn_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon)
        self.attention = Attention(cfg, has_bias_table, rngs)
        self.ff_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon)
        self.ff = FeedForward(cfg, rngs)

    def __call__(self, x, bias, key_mask):
        x = x + self.attention(self.attn_norm(x), bias, key_mask)
        return x + self.ff(self.ff_norm(x))


class T5Encoder(nnx.Module):
    """Token ids `(B, L)` (+ mask) -> last hidden state `(B, L, d_model)`."""

    def __init__(self, config: T5Config, *, rngs: nnx.Rngs = None):
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        cfg = self.config = config
        self.shared = nnx.Embed(cfg.vocab_size, cfg.d_model, rngs=rngs)
        self.blocks = nnx.List([Block(cfg, cfg.per_layer_position_bias or i == 0, rngs)
                                for i in range(cfg.num_layers)])
        self.final_layer_norm = RMSNorm(cfg.d_model, cfg.layer_norm_epsilon)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """Jitted `encode`: one compile per (B, L)."""
        return _jit_encode(self, input_ids, attention_mask)

    def encode(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        if input_ids.ndim != 2:
            raise ValueError(f"T5 expects input_ids (B, L), got shape {input_ids.shape}")
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(f"attention_mask {attention_mask.shape} must match input_ids {input_ids.shape}")
        key_mask = None if attention_mask is None else attention_mask.astype(bool)
        x = self.shared(input_ids)
        length = input_ids.shape[1]
        bias = self.blocks[0].attention.position_bias(length)  # T5: layer 0's table, shared
        for block in self.blocks:
            if self.config.per_layer_position_bias:  # umT5: each layer its own table
                bias = block.attention.position_bias(length)
            x = block(x, bias, key_mask)
        return self.final_layer_norm(x)


_jit_encode = nnx.jit(T5Encoder.encode)


# ----------------------------------------------------------------------------- loading

def _hf_weights(cfg: T5Config, t: dict[str, np.ndarray]) -> dict[tuple, object]:
    lin = hf.linear_kernel
    # T5EncoderModel saves `shared.weight`; some exports keep only `encoder.embed_tokens.weight`.
    w: dict[tuple, object] = {("shared", "embedding"): hf.getter(t, "shared.weight", "encoder.embed_tokens.weight")}
    for i in range(cfg.num_layers):
        p = f"encoder.block.{i}.layer."
        for name in ("q", "k", "v", "o"):
            w[("blocks", i, "attention", name, "kernel")] = hf.getter(t, p + f"0.SelfAttention.{name}.weight",
                                                                      transform=lin)
        w[("blocks", i, "attention", "relative_attention_bias", "embedding")] = hf.getter(
            t, p + "0.SelfAttention.relative_attention_bias.weight")
        w[("blocks", i, "attn_norm", "scale")] = hf.getter(t, p + "0.layer_norm.weight")
        w[("blocks", i, "ff_norm", "scale")] = hf.getter(t, p + "1.layer_norm.weight")
        for name in ("wi", "wi_0", "wi_1", "wo"):
            w[("blocks", i, "ff", name, "kernel")] = hf.getter(t, p + f"1.DenseReluDense.{name}.weight", transform=lin)
    w[("final_layer_norm", "scale")] = hf.getter(t, "encoder.final_layer_norm.weight")
    return w


def load_t5(path: str | os.PathLike, *, dtype=jnp.float32) -> T5Encoder:
    """Load a T5 / umT5 encoder from an HF directory (config.json + safetensors; a full
    encoder-decoder checkpoint works too, the decoder is ignored) or from an omnijax orbax
    directory written by `convert_to_orbax`."""
    path = os.fspath(path)
    if hf.is_omnijax_dir(path):
        from omnijax.module_io import load_module

        return hf.cast_floats(load_module(path, lambda d: T5Encoder(T5Config(**d)), kind=KIND), dtype)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"T5 checkpoint directory {path} does not exist")
    cfg_file = os.path.join(path, "config.json")
    cfg = T5Config.from_hf(hf.read_json(cfg_file), source=cfg_file)
    files = hf.safetensors_files(path)  # refuses pickles before anything is read
    tensors = hf.read_safetensors(path)
    return hf.fill_module(lambda: T5Encoder(cfg), _hf_weights(cfg, tensors), source=", ".join(files), dtype=dtype)


def convert_to_orbax(src: str | os.PathLike, dst: str | os.PathLike, *, overwrite: bool = False) -> str:
    """HF T5 / umT5 directory -> omnijax orbax directory, tokenizer files copied alongside."""
    from omnijax.module_io import save_module

    tokenizer = T5Tokenizer(src)  # fail before writing anything if the tokenizer is missing
    model = load_t5(src)
    out = os.fspath(save_module(dst, model, model.config, kind=KIND, overwrite=overwrite))
    for name in TOKENIZER_FILES:
        f = os.path.join(tokenizer.path, name)
        if os.path.isfile(f):
            shutil.copy(f, os.path.join(out, name))
    return out


# ----------------------------------------------------------------------------- text encoder

@functools.partial(jax.jit, static_argnames=("graphdef",))
def _encode_masked(graphdef, state, ids, mask):
    """(B, L) ids + mask -> (B, L, D) float32 states, zero at padding; one compile per config and shape."""
    states = nnx.merge(graphdef, state).encode(ids, mask)
    return jnp.where(mask[..., None], states, 0.0).astype(jnp.float32)


class T5TextEncoder:
    """Strings -> (states `(B, max_length, D)` float32, mask `(B, max_length)` bool).

    Every call pads to `max_length` tokens and the batch to a power of two (at most
    `batch_size`, larger inputs go in several passes), so only a handful of shapes ever
    compile. States at padding positions are zeroed so cached embeddings are deterministic.
    """

    def __init__(self, model: T5Encoder, tokenizer: T5Tokenizer, *, max_length: int = 128,
                 batch_size: int = 16, name: str = "t5"):
        if max_length < 2:
            raise ValueError(f"t5 max_length must be >= 2 (text + </s>), got {max_length}")
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.max_length, self.batch_size = int(max_length), int(batch_size)
        self.dim = model.config.d_model
        if tokenizer.vocab_size > model.config.vocab_size:
            raise ValueError(f"{tokenizer.path}: tokenizer has {tokenizer.vocab_size} tokens but the model embeds "
                             f"only {model.config.vocab_size}")
        self._graphdef, self._state = nnx.split(model)

    def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = self.tokenizer(texts, self.max_length)
        out = np.zeros((len(texts), self.max_length, self.dim), np.float32)
        for s in range(0, len(texts), self.batch_size):
            n = min(self.batch_size, len(texts) - s)
            bucket = min(self.batch_size, 1 << (n - 1).bit_length())
            pid = np.full((bucket, self.max_length), self.tokenizer.pad_id, np.int32)
            pmask = np.zeros((bucket, self.max_length), bool)
            pid[:n], pmask[:n] = ids[s: s + n], mask[s: s + n]
            pmask[n:, 0] = True  # filler rows attend to one token so their softmax stays finite
            out[s: s + n] = np.asarray(_encode_masked(self._graphdef, self._state, pid, pmask))[:n]
        return out, mask


def text_encoder_from_spec(path: str | None, **opts) -> T5TextEncoder:
    """`t5:PATH[:max_length=128,batch_size=16,dtype=float32|bfloat16,tokenizer=DIR]`.

    PATH: an HF directory or a converted orbax directory. The tokenizer is looked for in PATH,
    PATH/tokenizer and ../tokenizer (diffusers layout: `t5:WAN/text_encoder` finds `WAN/tokenizer`).
    `dtype=bfloat16` halves the memory of big encoders (umT5-XXL: 5.7 B parameters); the
    states are returned as float32 either way.
    """
    if not path:
        raise ValueError("t5 text encoder needs a checkpoint directory: 't5:PATH[:max_length=...]'")
    known = {"max_length", "batch_size", "dtype", "tokenizer"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise ValueError(f"t5 spec: unknown options {unknown}; known: {sorted(known)}")
    dtype = hf.parse_dtype(opts.pop("dtype", "float32"), where="t5 spec")
    tokenizer = T5Tokenizer(opts.pop("tokenizer", path))
    return T5TextEncoder(load_t5(path, dtype=dtype), tokenizer, **opts)


__all__: Sequence[str] = ("T5Config", "T5Encoder", "T5TextEncoder", "load_t5", "convert_to_orbax",
                          "text_encoder_from_spec", "relative_position_buckets")
