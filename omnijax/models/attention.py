"""The single attention entry point: picks cuDNN / Pallas splash / XLA by backend and config.

Layout everywhere: q `(B, Lq, H, D)`, k and v `(B, Lk, H, D)`, optional `key_mask`
`(B, Lk)` bool (True = attend; text padding, dropped reference). Output `(B, Lq, H, D)`.

Implementations (`implementation=`):
- "reference": plain einsum softmax in float32; what the tests compare against.
- "xla": `jax.nn.dot_product_attention(implementation="xla")`; the CPU choice.
- "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")`; GPU, bf16/fp16 only.
- "splash": the Pallas TPU splash kernel (segment ids carry the key mask); off TPU it runs
  in Pallas interpret mode (slow; for tests).
- "auto": cudnn on GPU for half-precision inputs, splash on TPU, xla otherwise.

A row whose keys are all masked returns zeros (reference and xla agree on that), rather
than a softmax over nothing.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("auto", "xla", "cudnn", "splash", "reference")


def resolve(implementation: str, dtype: jnp.dtype, head_dim: int) -> str:
    """The concrete implementation "auto" stands for on this backend."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r} not in {IMPLEMENTATIONS}")
    if implementation != "auto":
        return implementation
    backend = jax.default_backend()
    if backend == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) and head_dim <= 128 \
            and head_dim % 8 == 0:
        return "cudnn"
    if backend == "tpu" and head_dim % 128 == 0:
        return "splash"
    return "xla"


def reference_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None = None
                        ) -> jax.Array:
    """softmax(q k^T / sqrt(D)) v in float32, masked keys excluded."""
    scale = 1.0 / np.sqrt(q.shape[-1])
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(jnp.float32), k.astype(jnp.float32)) * scale
    if key_mask is not None:
        logits = jnp.where(key_mask[:, None, None, :], logits, -jnp.inf)
    m = jnp.max(logits, axis=-1, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    w = jnp.exp(logits - m)
    denom = jnp.sum(w, axis=-1, keepdims=True)
    w = w / jnp.where(denom > 0, denom, 1.0)
    out = jnp.einsum("bhqk,bkhd->bqhd", w, v.astype(jnp.float32))
    return out.astype(q.dtype)


def _splash(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None) -> jax.Array:
    """Pallas splash attention (TPU). Pads lengths to the 128 block; padded keys masked."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as smask

    b, lq, h, d = q.shape
    lk = k.shape[1]
    block = 128
    pq, pk = -lq % block, -lk % block
    if key_mask is None:
        key_mask = jnp.ones((b, lk), bool)
    key_mask = jnp.pad(key_mask, ((0, 0), (0, pk)))
    q = jnp.pad(q * (1.0 / np.sqrt(d)), ((0, 0), (0, pq), (0, 0), (0, 0)))
    k = jnp.pad(k, ((0, 0), (0, pk), (0, 0), (0, 0)))
    v = jnp.pad(v, ((0, 0), (0, pk), (0, 0), (0, 0)))
    full = smask.FullMask((lq + pq, lk + pk))
    # Off TPU the kernel runs in Pallas interpret mode: slow, but lets CPU tests check it.
    kernel = sk.make_splash_mha(mask=smask.MultiHeadMask([full] * h), head_shards=1, q_seq_shards=1,
                                interpret=jax.default_backend() != "tpu")
    # Same segment id = may attend: queries are all segment 0, masked keys segment 1.
    seg = sk.SegmentIds(q=jnp.zeros((b, lq + pq), jnp.int32), kv=(~key_mask).astype(jnp.int32))
    to_hld = functools.partial(jnp.swapaxes, axis1=1, axis2=2)  # (B, L, H, D) -> (B, H, L, D)
    out = jax.vmap(kernel)(to_hld(q), to_hld(k), to_hld(v), segment_ids=seg)
    return to_hld(out)[:, :lq]


def attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array | None = None, *,
              implementation: str = "auto") -> jax.Array:
    """Multi-head attention; see the module doc for layouts and implementations."""
    if q.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention expects q (B,Lq,H,D), k = v (B,Lk,H,D); got q {q.shape}, "
                         f"k {k.shape}, v {v.shape}")
    if key_mask is not None and key_mask.shape != k.shape[:2]:
        raise ValueError(f"key_mask must be (B, Lk) = {k.shape[:2]}, got {key_mask.shape}")
    impl = resolve(implementation, q.dtype, q.shape[-1])
    if impl == "reference":
        return reference_attention(q, k, v, key_mask)
    if impl == "splash":
        out = _splash(q, k, v, key_mask)
    else:
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=impl)
    if key_mask is not None:
        # Kernels give an average over masked keys when a row has no valid key; zero it.
        out = jnp.where(jnp.any(key_mask, axis=-1)[:, None, None, None], out, 0).astype(out.dtype)
    return out
