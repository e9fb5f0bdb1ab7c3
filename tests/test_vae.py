"""Causal 3D VAE: streamed == full, causality, presets, errors, save/load, gradients.

Parity against diffusers' AutoencoderKLWan lives in test_convert.py (it goes through the
safetensors loader).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omnijax.models import vae as vae_lib
from omnijax.models.vae import CausalVAE, VAEConfig

# The tiny preset's structure at base width 4 and z 8 (Wan2.1's own structure is covered
# by the diffusers parity test in test_convert.py). Tests share one video shape, (1, 13,
# 16, 24, 3) -> latents (1, 4, 2, 3, 8), so the jitted passes compile once per module.
MINI = dataclasses.replace(VAEConfig.tiny(), base_dim=4, z_dim=8)


def _video(t=13, h=16, w=24, seed=0, b=1):
    return np.random.RandomState(seed).uniform(-1, 1, (b, t, h, w, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def mini():
    vae = CausalVAE(MINI, rngs=nnx.Rngs(3))
    # non-trivial norm scales and biases, so a wrong broadcast or a dropped bias shows
    rng = np.random.RandomState(1)
    for path, var in nnx.to_flat_state(nnx.state(vae, nnx.Param)):
        if path[-1] in ("gamma", "bias"):
            var.value = var.value + 0.2 * jnp.asarray(rng.standard_normal(var.value.shape), jnp.float32)
    return vae


def test_presets_shapes_and_compression():
    for name in vae_lib.PRESETS:
        cfg = VAEConfig.preset(name)
        assert cfg.time_factor == 4 and cfg.space_factor == 8
    assert VAEConfig.tiny().z_dim == 16
    assert vae_lib.latent_shape((2, 17, 64, 48, 3), VAEConfig.tiny()) == (2, 5, 8, 6, 16)
    assert vae_lib.frames_for_latents(5, VAEConfig.tiny()) == 17
    with pytest.raises(ValueError, match="unknown VAE preset"):
        VAEConfig.preset("huge")


def test_wan21_parameter_count_equals_diffusers():
    torch = pytest.importorskip("torch")
    from diffusers import AutoencoderKLWan

    with torch.device("meta"):  # no allocation
        reference = sum(p.numel() for p in AutoencoderKLWan().parameters())
    assert vae_lib.count_params(VAEConfig.wan21()) == reference == 126_892_531


def test_streamed_equals_full(mini):
    video = _video()  # 1 + 4*3 frames -> 4 latent frames
    mean_s, logvar_s = mini.encode_distribution(video, streamed=True)
    mean_f, logvar_f = mini.encode_distribution(video, streamed=False)
    assert mean_s.shape == (1, 4, 2, 3, 8)
    np.testing.assert_allclose(mean_s, mean_f, atol=1e-5, rtol=0)
    np.testing.assert_allclose(logvar_s, logvar_f, atol=1e-5, rtol=0)
    assert float(jnp.std(mean_f)) > 1e-2  # not a degenerate constant

    v_s = mini.decode(mean_f, streamed=True, clamp=False)
    v_f = mini.decode(mean_f, streamed=False, clamp=False)
    assert v_s.shape == video.shape
    np.testing.assert_allclose(v_s, v_f, atol=1e-5, rtol=0)
    assert float(jnp.std(v_f[:, 1:] - v_f[:, :-1])) > 1e-3  # frames differ from each other


def test_stream_objects_continue_across_calls(mini):
    video = _video(seed=2)
    whole = mini.encode(video, streamed=False)
    enc = mini.stream_encoder()
    parts = [enc.push(video[:, :5]), enc.push(video[:, 5:9]), enc.push(video[:, 9:])]
    np.testing.assert_allclose(jnp.concatenate(parts, 1), whole, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="multiple of 4"):
        enc.push(video[:, :5])

    full = mini.decode(whole, streamed=False)
    dec = mini.stream_decoder()
    frames = [dec.push(whole[:, :2]), dec.push(whole[:, 2:3]), dec.push(whole[:, 3:])]
    assert [f.shape[1] for f in frames] == [5, 4, 4]
    np.testing.assert_allclose(jnp.concatenate(frames, 1), full, atol=1e-5, rtol=0)


def test_encoder_is_causal(mini):
    video = _video(seed=4)
    base = np.asarray(mini.encode(video, streamed=False))
    changed = video.copy()
    changed[:, 6] = -changed[:, 6]  # frame 6 belongs to latent frame 2 (frames 5..8)
    moved = np.asarray(mini.encode(changed, streamed=False))
    np.testing.assert_array_equal(moved[:, :2], base[:, :2])
    assert np.abs(moved[:, 2:] - base[:, 2:]).max() > 1e-4


def test_decoder_is_causal(mini):
    z = np.random.RandomState(5).standard_normal((1, 4, 2, 3, 8)).astype(np.float32)
    base = np.asarray(mini.decode(z, streamed=False, clamp=False))
    z2 = z.copy()
    z2[:, 2] += 1.0  # latent frame 2 makes video frames 5..8
    moved = np.asarray(mini.decode(z2, streamed=False, clamp=False))
    np.testing.assert_array_equal(moved[:, :5], base[:, :5])
    assert np.abs(moved[:, 5:9] - base[:, 5:9]).max() > 1e-4


def test_decode_clamps_to_unit_range(mini):
    z = 5 * np.random.RandomState(6).standard_normal((1, 4, 2, 3, 8)).astype(np.float32)
    raw = mini.decode(z, clamp=False)
    out = mini.decode(z)
    assert float(jnp.abs(raw).max()) > 1.0  # the test means something
    np.testing.assert_array_equal(out, jnp.clip(raw, -1, 1))


@pytest.mark.parametrize("bad, err, match", [
    (np.zeros((1, 9, 16, 16), np.float32), ValueError, r"\(B, T, H, W, 3\)"),
    (np.zeros((1, 9, 16, 16, 4), np.float32), ValueError, "3 channels"),
    (np.zeros((1, 8, 16, 16, 3), np.float32), ValueError, "T = 1 \\+ 4k"),
    (np.zeros((1, 9, 12, 16, 3), np.float32), ValueError, "multiples of 8"),
    (np.zeros((1, 9, 16, 16, 3), np.uint8), TypeError, "float in \\[-1, 1\\]"),
])
def test_bad_video_is_refused(mini, bad, err, match):
    with pytest.raises(err, match=match):
        mini.encode(bad)


def test_bad_latents_are_refused(mini):
    with pytest.raises(ValueError, match=r"\(B, F>=1, h, w, 8\)"):
        mini.decode(np.zeros((1, 2, 2, 2, 16), np.float32))
    with pytest.raises(TypeError, match="float"):
        mini.decode(np.zeros((1, 2, 2, 2, 8), np.int32))


def test_normalize_uses_per_channel_stats():
    cfg = VAEConfig.wan21()
    vae = nnx.eval_shape(lambda: CausalVAE(cfg))  # stats come from the config, no weights needed
    z = np.random.RandomState(7).standard_normal((1, 2, 1, 1, 16)).astype(np.float32)
    zn = vae.normalize(z)
    expected = (z - np.asarray(cfg.latents_mean)) / np.asarray(cfg.latents_std)
    np.testing.assert_allclose(zn, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(vae.denormalize(zn), z, rtol=1e-5, atol=1e-5)
    tiny = nnx.eval_shape(lambda: CausalVAE(VAEConfig.tiny()))
    np.testing.assert_array_equal(tiny.normalize(z), z)  # identity stats


def test_full_path_differentiates_under_jit(mini):
    video = jnp.asarray(_video(5, w=16, seed=8))

    @nnx.jit
    def loss_and_grad(vae, x):
        def loss(vae):  # the public entry points, full (non-streamed) path
            mean, logvar = vae.encode_distribution(x)
            recon = vae.decode(mean, streamed=False, clamp=False)
            return jnp.mean((recon - x) ** 2) + 1e-3 * jnp.mean(mean ** 2 + jnp.exp(logvar) - logvar)
        return nnx.value_and_grad(loss)(vae)

    value, grads = loss_and_grad(mini, video)
    leaves = jax.tree.leaves(grads)
    assert np.isfinite(float(value))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    # the first encoder conv and the last decoder conv both receive gradient
    assert float(jnp.abs(grads["encoder"]["conv_in"]["kernel"][...]).max()) > 0
    assert float(jnp.abs(grads["decoder"]["conv_out"]["kernel"][...]).max()) > 0


def test_save_load_round_trip(mini, tmp_path):
    vae_lib.save(tmp_path / "vae", mini)
    back = vae_lib.load(tmp_path / "vae")
    assert back.config == mini.config
    video = _video(seed=9)
    np.testing.assert_array_equal(back.encode(video), mini.encode(video))
    with pytest.raises(FileExistsError):
        vae_lib.save(tmp_path / "vae", mini)


def test_streamed_decode_working_memory_does_not_grow(mini):
    """XLA's temporaries for the streamed decode are the same at 4 and 7 latent frames
    (13 and 25 video frames): only the output buffer grows. The encoder streams through the
    same `_stream` loop."""
    graphdef, state = nnx.split(mini)
    kwargs = (("clamp", False), ("streamed", True))

    def analysis(frames):
        z = jnp.zeros((1, frames, 2, 3, 8), jnp.float32)
        return vae_lib._run_jit.lower(graphdef, state, z, "reconstruct", kwargs).compile().memory_analysis()

    short, long = analysis(4), analysis(7)
    assert long.output_size_in_bytes > 1.5 * short.output_size_in_bytes  # the video did grow
    assert long.temp_size_in_bytes <= short.temp_size_in_bytes + 1024
