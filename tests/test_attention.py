"""Attention implementations agree with the float32 einsum reference (and with PyTorch SDPA)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omnijax.models import attention as attn


def _qkv(b=2, lq=9, lk=13, h=3, d=8, seed=0, dtype=jnp.float32):
    ks = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(ks[0], (b, lq, h, d), dtype)
    k = jax.random.normal(ks[1], (b, lk, h, d), dtype)
    v = jax.random.normal(ks[2], (b, lk, h, d), dtype)
    return q, k, v


def test_auto_is_xla_on_cpu():
    assert attn.resolve("auto", jnp.float32, 64) == "xla"
    assert attn.resolve("auto", jnp.bfloat16, 64) == "xla"
    with pytest.raises(ValueError, match="not in"):
        attn.resolve("flash", jnp.float32, 64)


def test_reference_matches_torch_sdpa_with_mask():
    torch = pytest.importorskip("torch")
    q, k, v = _qkv()
    mask = jnp.arange(13)[None] < jnp.array([[13], [6]])
    ours = attn.attention(q, k, v, mask, implementation="reference")
    tq, tk, tv = (torch.from_numpy(np.array(a)).transpose(1, 2) for a in (q, k, v))
    tmask = torch.from_numpy(np.array(mask))[:, None, None, :]
    ref = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tmask).transpose(1, 2)
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_xla_matches_reference(masked):
    q, k, v = _qkv(seed=1)
    mask = (jnp.arange(13)[None] < jnp.array([[4], [11]])) if masked else None
    out = attn.attention(q, k, v, mask, implementation="xla")
    ref = attn.attention(q, k, v, mask, implementation="reference")
    np.testing.assert_allclose(out, ref, atol=2e-5, rtol=2e-5)


def test_masked_keys_have_no_influence_and_empty_rows_are_zero():
    q, k, v = _qkv(seed=2)
    mask = jnp.arange(13)[None].repeat(2, 0) % 3 != 0           # scattered holes, not a prefix
    mask = mask.at[1].set(False)                                 # sample 1: nothing to attend to
    for impl in ("xla", "reference"):
        out = attn.attention(q, k, v, mask, implementation=impl)
        k2 = jnp.where(mask[..., None, None], k, 100.0)
        v2 = jnp.where(mask[..., None, None], v, -50.0)
        np.testing.assert_allclose(attn.attention(q, k2, v2, mask, implementation=impl), out, atol=1e-5)
        np.testing.assert_array_equal(out[1], 0.0)
        assert np.isfinite(np.asarray(out)).all()


def test_bf16_xla_close_to_reference():
    q, k, v = _qkv(seed=3, dtype=jnp.bfloat16)
    out = attn.attention(q, k, v, implementation="xla")
    ref = attn.reference_attention(q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=3e-2)


def test_shape_errors_say_what_was_expected():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"k = v \(B,Lk,H,D\)"):
        attn.attention(q, k, v[:, :5])
    with pytest.raises(ValueError, match="key_mask must be"):
        attn.attention(q, k, v, jnp.ones((2, 5), bool))


def test_splash_kernel_matches_reference_in_interpret_mode():
    """The TPU kernel's masking (segment ids, 128-padding) checked on CPU via Pallas interpret mode."""
    q, k, v = _qkv(b=2, lq=9, lk=13, h=2, d=8, seed=4)
    mask = jnp.arange(13)[None].repeat(2, 0) % 4 != 1
    mask = mask.at[1].set(False)
    out = attn.attention(q, k, v, mask, implementation="splash")
    ref = attn.attention(q, k, v, mask, implementation="reference")
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=1e-4)
