"""SynthTalk evaluation's VAE references: the round trip is measured the way the product
makes it (fresh windows), and the streamed form is a different measurement."""

import dataclasses

import numpy as np
from flax import nnx

from omnijax.eval import synthtalk_eval as se
from omnijax.models.vae import CausalVAE, VAEConfig


def test_windowed_round_trip_is_fresh_windows_and_keeps_every_frame():
    vae = CausalVAE(dataclasses.replace(VAEConfig.tiny(), base_dim=4, z_dim=8), rngs=nnx.Rngs(0))
    frames = np.random.default_rng(0).integers(0, 256, (30, 16, 16, 3), dtype=np.uint8)
    win = se.vae_reconstruction(vae, frames, window=9)
    # 30 frames = windows of 9, 9, 9, then the 3 left in the longest 1 + 4k pieces: 1, 1, 1
    assert win.shape == (30, 16, 16, 3)
    parts = [se.vae_reconstruction(vae, frames[s:s + n])
             for s, n in ((0, 9), (9, 9), (18, 9), (27, 1), (28, 1), (29, 1))]
    np.testing.assert_array_equal(win, np.concatenate(parts))
    streamed = se.vae_reconstruction(vae, frames)
    assert streamed.shape == (29, 16, 16, 3)                      # 1 + 4k frames of one sequence
    np.testing.assert_array_equal(streamed[:9], win[:9])          # the same first window
    assert np.abs(streamed[9:28].astype(int) - win[9:28]).max() > 0   # later: the cache carries on
    psnr = se.psnr_windows(vae, frames, window=9)              # whole windows only
    want = [10 * np.log10(255 ** 2 / np.mean((p.astype(float) - frames[s:s + 9]) ** 2))
            for s, p in zip((0, 9, 18), parts)]
    np.testing.assert_allclose(psnr, np.mean(want), rtol=1e-12)
    np.testing.assert_allclose(se.psnr_windows(vae, frames, window=9, rec=win), psnr, rtol=1e-12)
