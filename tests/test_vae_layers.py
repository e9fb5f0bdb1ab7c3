"""The causal conv's two formulations: "taps" (the time taps stacked on channels, one 2D conv)
equals "conv3d" to float32 rounding, forward and backward, for every conv shape the VAE
uses, with and without a cache, strided or not; and so does the whole VAE. Also: "auto"
picks per backend, and `conv_impl` changes no weight (configs and checkpoints without it
still load).
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omnijax.models import vae as vae_lib
from omnijax.models import vae_layers as L
from omnijax.models.vae import CausalVAE, VAEConfig

IMPLS = ("conv3d", "taps")
# Every CausalConv3d shape in the VAE: 3x3x3 in ResBlocks (incl. conv_in from RGB and
# conv_out to 2z), 3x1x1 in the temporal resamplers (dim -> dim down, dim -> 2 dim up) and
# 1x1x1 in shortcuts and (post_)quant_conv.
CONV_SHAPES = [((3, 3, 3), 3, 8), ((3, 3, 3), 8, 8), ((3, 3, 3), 8, 16), ((3, 1, 1), 8, 8),
               ((3, 1, 1), 8, 16), ((1, 1, 1), 8, 16), ((1, 1, 1), 16, 16)]
# float32 sums over up to 27 * Cin terms, in a different order: agree to rounding
TOL = dict(atol=2e-5, rtol=2e-5)


def _rand(shape, seed):
    return np.random.RandomState(seed).standard_normal(shape).astype(np.float32)


def _pair(cls, *args, **kwargs):
    """`{impl: module}`: the same module under each impl, sharing weights (biases non-zero)."""
    mods = {impl: cls(*args, conv_impl=impl, rngs=nnx.Rngs(0), **kwargs) for impl in IMPLS}
    rng = np.random.RandomState(1)
    for path, var in nnx.to_flat_state(nnx.state(mods["conv3d"], nnx.Param)):
        if path[-1] == "bias":
            var.value = jnp.asarray(rng.standard_normal(var.value.shape), jnp.float32)
    nnx.update(mods["taps"], nnx.state(mods["conv3d"]))
    return mods


def _close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **(tol or TOL))


@pytest.mark.parametrize("kernel, cin, cout", CONV_SHAPES)
def test_causal_conv_taps_equal_conv3d_full_and_streamed(kernel, cin, cout):
    mods = _pair(L.CausalConv3d, cin, cout, kernel)
    x = jnp.asarray(_rand((2, 9, 6, 5, cin), 0))  # odd, non-square frames catch padding slips
    out = {}
    for impl, conv in mods.items():
        full, full_cache = conv(x)
        # streamed: first frame alone (no cache), then chunks of 4 continuing the cache
        y0, c = conv(x[:, :1])
        y1, c = conv(x[:, 1:5], c)
        y2, c = conv(x[:, 5:], c)
        streamed = jnp.concatenate([y0, y1, y2], axis=1)
        _close(streamed, full)
        out[impl] = (full, streamed, full_cache, c)
    assert out["taps"][0].shape == (2, 9, 6, 5, cout)
    _close(out["taps"], out["conv3d"])
    assert float(jnp.abs(out["taps"][0]).max()) > 0.1  # a real signal, not all zeros


@pytest.mark.parametrize("kernel, cin, cout", CONV_SHAPES)
@pytest.mark.parametrize("t_stride", [1, 2])
def test_conv_gradients_equal(kernel, cin, cout, t_stride):
    """d/d(input, kernel, bias) of the conv body; stride 2 is the temporal downsampler's."""
    x = jnp.asarray(_rand((2, 7, 5, 6, cin), 2))  # 7 frames: (7 - 3) // 2 + 1 = 3 outputs
    k = jnp.asarray(_rand((*kernel, cin, cout), 3) / np.sqrt(np.prod(kernel) * cin))
    b = jnp.asarray(_rand((cout,), 4))
    t_out = (7 - kernel[0]) // t_stride + 1
    r = jnp.asarray(_rand((2, t_out, 5, 6, cout), 5))  # a random cotangent

    def loss(x, k, b, impl):
        return jnp.sum(L._conv(x, k, b, conv_impl=impl, t_stride=t_stride) * r)

    grads = {impl: jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)), static_argnums=3)(x, k, b, impl)
             for impl in IMPLS}
    _close(grads["taps"], grads["conv3d"], atol=1e-4, rtol=1e-4)
    assert all(float(jnp.abs(g).max()) > 0 for g in grads["taps"][1])


def test_cached_conv_gradients_equal():
    """Gradients also flow into the cache (the previous chunk) identically."""
    mods = _pair(L.CausalConv3d, 8, 8, (3, 3, 3))
    x, cache = jnp.asarray(_rand((1, 4, 6, 6, 8), 6)), jnp.asarray(_rand((1, 2, 6, 6, 8), 7))
    grads = {}
    for impl, conv in mods.items():
        graphdef, state = nnx.split(conv)

        def loss(state, x, cache, graphdef=graphdef):
            y, c = nnx.merge(graphdef, state)(x, cache)
            return jnp.sum(jnp.sin(y)) + jnp.sum(c ** 2)
        grads[impl] = jax.grad(loss, argnums=(0, 1, 2))(state, x, cache)
    _close(grads["taps"], grads["conv3d"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("temporal", [False, True])
def test_resamplers_equal_full_and_streamed(temporal):
    """Downsample (stride-2 temporal conv, 1-frame cache) and Upsample (3-tap conv that
    unfolds into two frames), started without a cache and continued with one."""
    x = jnp.asarray(_rand((2, 9, 8, 6, 8), 8))
    down = _pair(L.Downsample, 8, temporal=temporal)
    up = _pair(L.Upsample, 8, 4, temporal=temporal)
    out = {}
    for impl in IMPLS:
        d_full, _ = down[impl](x)
        d0, c = down[impl](x[:, :1])
        d1, _ = down[impl](x[:, 1:], c)
        u_full, _ = up[impl](x)
        u0, c = up[impl](x[:, :1])
        u1, _ = up[impl](x[:, 1:], c)
        _close(jnp.concatenate([d0, d1], 1), d_full)
        _close(jnp.concatenate([u0, u1], 1), u_full)
        out[impl] = (d_full, u_full)
    assert out["taps"][0].shape[1] == (5 if temporal else 9)
    assert out["taps"][1].shape[1] == (17 if temporal else 9)
    _close(out["taps"], out["conv3d"])


def test_auto_is_taps_on_cpu_and_conv3d_elsewhere(monkeypatch):
    expected = "taps" if jax.default_backend() == "cpu" else "conv3d"
    assert L.resolve_conv_impl("auto") == expected
    assert L.resolve_conv_impl("conv3d") == "conv3d" and L.resolve_conv_impl("taps") == "taps"
    conv = L.CausalConv3d(4, 4, rngs=nnx.Rngs(0))
    x = jnp.zeros((1, 3, 4, 4, 4))

    def conv_ranks():  # operand rank of every conv in the traced graph: 5 = conv3d, 4 = 2D
        jaxpr = jax.make_jaxpr(lambda x: conv(x)[0])(x)
        return {eq.invars[0].aval.ndim for eq in jaxpr.eqns if eq.primitive.name == "conv_general_dilated"}

    for backend, ranks in (("cpu", {4}), ("gpu", {5}), ("tpu", {5})):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        assert conv_ranks() == ranks, backend


def test_unknown_conv_impl_is_refused():
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        L.CausalConv3d(4, 4, conv_impl="conv2d", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="conv_impl must be one of"):
        VAEConfig(conv_impl="fast")


# --------------------------------------------------------------------------- whole VAE

MINI = dataclasses.replace(VAEConfig.tiny(), base_dim=4, z_dim=8)


@pytest.fixture(scope="module")
def vaes():
    """The test_vae MINI VAE under both impls, same weights (biases and gammas non-zero)."""
    vaes = {impl: CausalVAE(dataclasses.replace(MINI, conv_impl=impl), rngs=nnx.Rngs(3))
            for impl in IMPLS}
    rng = np.random.RandomState(1)
    for path, var in nnx.to_flat_state(nnx.state(vaes["conv3d"], nnx.Param)):
        if path[-1] in ("gamma", "bias"):
            var.value = var.value + 0.2 * jnp.asarray(rng.standard_normal(var.value.shape), jnp.float32)
    nnx.update(vaes["taps"], nnx.state(vaes["conv3d"]))
    return vaes


def test_vae_streamed_encode_decode_equal(vaes):
    video = np.random.RandomState(0).uniform(-1, 1, (1, 13, 16, 24, 3)).astype(np.float32)
    z = {impl: vae.encode(video) for impl, vae in vaes.items()}  # streamed (scan over chunks)
    assert z["taps"].shape == (1, 4, 2, 3, 8)
    np.testing.assert_allclose(z["taps"], z["conv3d"], atol=1e-5, rtol=0)
    v = {impl: vae.decode(z["conv3d"], clamp=False) for impl, vae in vaes.items()}
    np.testing.assert_allclose(v["taps"], v["conv3d"], atol=1e-5, rtol=0)
    assert float(jnp.std(v["taps"])) > 1e-2


def test_vae_train_step_gradients_equal(vaes):
    """The VAEObjective's path: full-pass moments, then reconstruct(clamp=False)."""
    video = jnp.asarray(np.random.RandomState(8).uniform(-1, 1, (1, 5, 16, 16, 3)), jnp.float32)

    @nnx.jit
    def loss_and_grad(vae, x):
        def loss(vae):
            mean, logvar = vae.moments(x)
            rec = vae.reconstruct(mean + jnp.exp(0.5 * logvar) * 0.1, clamp=False)
            return jnp.mean(jnp.abs(rec - x)) + jnp.mean(mean ** 2 + jnp.exp(logvar) - logvar)
        return nnx.value_and_grad(loss)(vae)

    (l_t, g_t), (l_c, g_c) = loss_and_grad(vaes["taps"], video), loss_and_grad(vaes["conv3d"], video)
    np.testing.assert_allclose(l_t, l_c, rtol=1e-6)
    for (path, a), (_, b) in zip(nnx.to_flat_state(g_t), nnx.to_flat_state(g_c), strict=True):
        scale = float(jnp.abs(b.value).max()) + 1e-12
        assert float(jnp.abs(a.value - b.value).max()) <= 1e-4 * scale, path


def test_config_json_round_trip_and_old_configs():
    cfg = dataclasses.replace(VAEConfig.wan21(), conv_impl="taps")
    assert VAEConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg)))) == cfg
    old = dataclasses.asdict(VAEConfig.small())
    del old["conv_impl"]  # a config.json written before the field existed
    assert VAEConfig.from_dict(old).conv_impl == "auto"
    # the impl is not a weight: both build the same state tree (shapes and paths)
    shapes = {impl: jax.tree.map(lambda v: v.shape, nnx.state(nnx.eval_shape(
        lambda impl=impl: CausalVAE(dataclasses.replace(VAEConfig.tiny(), conv_impl=impl)))))
        for impl in IMPLS}
    assert shapes["taps"] == shapes["conv3d"]


def test_checkpoint_without_the_field_loads(vaes, tmp_path):
    """A checkpoint saved before `conv_impl` existed loads (as "auto"), weights unchanged."""
    vae_lib.save(tmp_path / "vae", vaes["conv3d"])
    blob = json.loads((tmp_path / "vae" / "config.json").read_text())
    assert blob["config"].pop("conv_impl") == "conv3d"
    (tmp_path / "vae" / "config.json").write_text(json.dumps(blob))
    back = vae_lib.load(tmp_path / "vae")
    assert back.config == dataclasses.replace(MINI, conv_impl="auto")
    _close(nnx.state(back, nnx.Param), nnx.state(vaes["conv3d"], nnx.Param), atol=0, rtol=0)
