"""Flow-matching math: endpoints, target, shift monotonicity, prefix-free loss, guidance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from omnijax.diffusion import flow


def _data(shape=(3, 4, 2, 2, 5), seed=0):
    k0, k1 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k0, shape), jax.random.normal(k1, shape)


def test_interpolation_endpoints_and_target_is_the_derivative():
    x0, eps = _data()
    np.testing.assert_allclose(flow.interpolate(x0, eps, jnp.zeros(3)), x0, atol=1e-6)
    np.testing.assert_allclose(flow.interpolate(x0, eps, jnp.ones(3)), eps, atol=1e-6)
    t = jnp.array([0.1, 0.5, 0.9])
    h = 1e-2
    deriv = (flow.interpolate(x0, eps, t + h) - flow.interpolate(x0, eps, t - h)) / (2 * h)
    np.testing.assert_allclose(deriv, flow.velocity_target(x0, eps), atol=1e-3)
    # per-sample t: sample 1 is halfway
    np.testing.assert_allclose(flow.interpolate(x0, eps, t)[1], 0.5 * (x0[1] + eps[1]), atol=1e-6)


def test_shift_is_monotone_keeps_endpoints_and_grows_with_tokens():
    t = jnp.linspace(0, 1, 101)
    for shift in (0.5, 1.0, 3.0):
        s = flow.shift_timesteps(t, shift)
        assert np.all(np.diff(np.asarray(s)) > 0)
        np.testing.assert_allclose([s[0], s[-1]], [0.0, 1.0], atol=1e-6)
    assert np.all(np.asarray(flow.shift_timesteps(t[1:-1], 3.0)) > np.asarray(t[1:-1]))
    shifts = [flow.resolution_shift(n) for n in (256, 1024, 4096, 16384, 32768)]
    assert all(a < b for a, b in zip(shifts, shifts[1:]))


def test_resolution_shift_is_bounded_at_every_preset_token_count():
    """The default rule stays in [1, 5] for every preset's training shape (and far beyond),
    is 1 for the CPU-sized tiny model, and reaches Wan2.1's 480p value at `base`."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
    import omnihuman
    from omnijax.train import objectives
    seen = {}
    for size in ("tiny", "small", "base", "large"):
        obj = objectives.build(omnihuman.get_config(f"size={size}"))
        seen[size] = obj.shift
        assert 1.0 <= obj.shift <= 5.0, (size, obj.shift)
        assert obj.recipe()["flow_shift"] == obj.shift
    assert seen["tiny"] == 1.0 and seen["base"] == pytest.approx(5.0)
    assert seen["tiny"] <= seen["small"] <= seen["base"]
    for n in (1, 10, 10**6, 10**9):
        assert 1.0 <= flow.resolution_shift(n) <= 5.0
    assert flow.resolve_shift("3.5", 10) == 3.5 and flow.resolve_shift("auto", 96) == 1.0
    with pytest.raises(ValueError, match="flow shift"):
        flow.resolve_shift("fast", 10)


def test_logit_normal_samples_in_range_and_shift_moves_mass_to_noise():
    key = jax.random.key(1)
    t = flow.sample_t(key, 4096)
    assert t.shape == (4096,) and float(t.min()) > 0 and float(t.max()) < 1
    assert abs(float(jnp.median(t)) - 0.5) < 0.05
    t3 = flow.sample_t(key, 4096, shift=3.0)
    assert float(jnp.median(t3)) > float(jnp.median(t)) + 0.1
    # same draws, shifted: elementwise larger
    assert bool(jnp.all(t3 >= t))


def test_loss_ignores_prefix_frames_and_is_per_sample():
    x0, eps = _data((2, 5, 2, 2, 3))
    target = flow.velocity_target(x0, eps)
    pred = target[:, 2:] + 0.0
    loss = flow.per_sample_loss(pred, target, num_prefix=2)
    np.testing.assert_allclose(loss, 0.0, atol=1e-7)
    # garbage in the prefix of the target changes nothing
    spoiled = target.at[:, :2].set(1e3)
    np.testing.assert_allclose(flow.per_sample_loss(pred, spoiled, num_prefix=2), 0.0, atol=1e-7)
    # an error on sample 1 only shows in sample 1's loss
    bad = pred.at[1].add(2.0)
    loss = flow.per_sample_loss(bad, target, num_prefix=2)
    np.testing.assert_allclose(loss, [0.0, 4.0], atol=1e-5)
    # frame mask: the error confined to frame 0 of the noisy frames is excluded
    bad0 = pred.at[:, 0].add(1.0)
    mask = jnp.array([[False, True, True]] * 2)
    np.testing.assert_allclose(flow.per_sample_loss(bad0, target, num_prefix=2, frame_mask=mask), 0.0, atol=1e-7)
    with pytest.raises(ValueError, match="does not match"):
        flow.per_sample_loss(pred, target)


def test_noised_draw_is_consistent():
    x0, _ = _data()
    d = flow.noised(jax.random.key(3), x0, shift=2.0)
    np.testing.assert_allclose(d["x_t"], flow.interpolate(x0, d["eps"], d["t"]), atol=1e-6)
    np.testing.assert_allclose(d["target"], d["eps"] - x0, atol=1e-6)


def test_guidance_combination():
    v0, v1 = _data((2, 3))
    v2 = v1 * 2 + 1
    np.testing.assert_allclose(flow.combine_guidance([v0, v1, v2], [1.0, 1.0]), v2, atol=1e-6)
    np.testing.assert_allclose(flow.combine_guidance([v0, v1, v2], [0.0, 0.0]), v0, atol=1e-6)
    np.testing.assert_allclose(flow.combine_guidance([v0, v1], [3.0]), v0 + 3 * (v1 - v0), atol=1e-5)
    np.testing.assert_allclose(flow.combine_guidance([v0, v1, v2], [2.0, 4.5]),
                               v0 + 2 * (v1 - v0) + 4.5 * (v2 - v1), atol=1e-5)
    with pytest.raises(ValueError, match="one scale per step"):
        flow.combine_guidance([v0, v1], [1.0, 2.0])


def test_guidance_annealing():
    for schedule in ("linear", "cosine"):
        s = [float(flow.guidance_scale(7.5, 1.0, i, 10, schedule)) for i in range(10)]
        assert s[0] == pytest.approx(7.5) and s[-1] == pytest.approx(1.0)
        assert all(a >= b for a, b in zip(s, s[1:]))
    assert float(flow.guidance_scale(3.0, 1.0, 5, 10, "constant")) == 3.0
