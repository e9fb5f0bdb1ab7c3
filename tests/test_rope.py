"""3D RoPE: token positions of [ref | frames], rotation invariants, relative positions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omnijax.models import rope


def test_axis_dims_split_the_head():
    for d in (6, 32, 64, 128):
        dims = rope.axis_dims(d)
        assert sum(dims) == d and all(x % 2 == 0 for x in dims)
    with pytest.raises(ValueError):
        rope.axis_dims(7)


def test_positions_reference_temporal_null_frames_in_order():
    gh, gw = 2, 3
    pos, on = rope.visual_positions(1, 5, gh, gw)
    g = gh * gw
    assert pos.shape == ((1 + 5) * g, 3) and on.shape == (6 * g,)
    np.testing.assert_array_equal(on[:g], 0)                 # reference: temporal rotation off
    np.testing.assert_array_equal(on[g:], 1)
    frame_t = pos[::g, 0]
    np.testing.assert_array_equal(frame_t[1:], [0, 1, 2, 3, 4])   # motion and noisy frames alike
    # without a reference the frames keep their positions
    pos_plain, _ = rope.visual_positions(0, 5, gh, gw)
    np.testing.assert_array_equal(pos[g:], pos_plain)
    # spatial grid row-major, same for every frame (reference included)
    np.testing.assert_array_equal(pos[:g, 1:], [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]])
    np.testing.assert_array_equal(pos[g:2 * g, 1:], pos[:g, 1:])


def test_reference_tokens_get_no_temporal_rotation():
    d = 24
    dt, dh, dw = rope.axis_dims(d)
    pos, on = rope.visual_positions(1, 2, 2, 2)
    pos = pos.copy()
    pos[:4, 0] = 7.0  # even a non-zero temporal position must not rotate a reference token
    cos, sin = rope.rope_angles(pos, on, d)
    np.testing.assert_allclose(cos[:4, : dt // 2], 1.0)
    np.testing.assert_allclose(sin[:4, : dt // 2], 0.0)
    assert np.abs(np.asarray(sin[4:, : dt // 2])).max() > 0.1   # noisy frame 1 is rotated
    # the spatial part of the reference is rotated like any token at the same (h, w)
    np.testing.assert_allclose(cos[:4, dt // 2:], cos[4:8, dt // 2:], atol=1e-6)


def test_rotation_preserves_norm_and_scores_depend_on_offsets_only():
    d = 24
    key = jax.random.key(0)
    q = jax.random.normal(key, (1, 2, 1, d))
    k = jax.random.normal(jax.random.fold_in(key, 1), (1, 2, 1, d))

    def score(p_q, p_k):
        pos = np.array([p_q, p_k], np.float32)
        cos, sin = rope.rope_angles(pos, np.ones(2), d)
        rq, rk = rope.apply_rope(q, cos, sin), rope.apply_rope(k, cos, sin)
        np.testing.assert_allclose(jnp.linalg.norm(rq, axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-5)
        return float(jnp.sum(rq[0, 0] * rk[0, 1]))

    a = score([1, 2, 3], [4, 0, 5])
    b = score([11, 7, -2], [14, 5, 0])   # same offsets (3, -2, 2), shifted
    c = score([1, 2, 3], [5, 0, 5])      # different temporal offset
    assert a == pytest.approx(b, rel=1e-4, abs=1e-4)
    assert abs(a - c) > 1e-3


def test_apply_rope_shape_check():
    cos, sin = rope.rope_angles(np.zeros((5, 3), np.float32), np.ones(5), 12)
    with pytest.raises(ValueError, match="does not match angles"):
        rope.apply_rope(jnp.zeros((1, 4, 2, 12)), cos, sin)
