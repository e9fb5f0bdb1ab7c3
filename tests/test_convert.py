"""Wan VAE conversion: parity with diffusers' AutoencoderKLWan (random weights, small config),
the `omnijax convert` CLI round trip, refusal of pickles, mismatches named."""

import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from omnijax import cli  # noqa: E402
from omnijax import convert  # noqa: E402
from omnijax.convert import ConversionError, load_wan_vae  # noqa: E402
from omnijax.models import vae as vae_lib  # noqa: E402

# Wan2.1's structure (mult 1,2,4,4, 2 res blocks, temporal [F,T,T]) at base width 8, z 4.
SMALL_WAN = dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                 temperal_downsample=[False, True, True])
VIDEO_SHAPE = (2, 9, 16, 24, 3)  # -> latents (2, 3, 2, 3, 4); batch 2 checks batching too


def _ncthw(x):  # ours (B, T, H, W, C) -> torch (B, C, T, H, W)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 1)))


def _ours(t):  # torch (B, C, T, H, W) -> ours
    return np.moveaxis(t.detach().numpy(), 1, -1)


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    torch.manual_seed(0)
    rng = np.random.RandomState(0)
    model = diffusers.AutoencoderKLWan(
        **SMALL_WAN,
        latents_mean=rng.standard_normal(4).round(4).tolist(),
        latents_std=(1 + rng.uniform(size=4)).round(4).tolist()).eval()
    with torch.no_grad():  # default gammas are 1 and biases 0: make them matter
        for name, p in model.named_parameters():
            if name.endswith(("gamma", "bias")):
                p.add_(0.2 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("wan") / "vae"
    model.save_pretrained(path)  # config.json + diffusion_pytorch_model.safetensors
    return path, model


@pytest.fixture(scope="module")
def reference(wan_dir):
    """diffusers' own encode (chunked 1, 4, 4) and decode (frame by frame, clamped)."""
    _, model = wan_dir
    video = np.random.RandomState(1).uniform(-1, 1, VIDEO_SHAPE).astype(np.float32)
    with torch.no_grad():
        post = model.encode(_ncthw(video)).latent_dist
        decoded = model.decode(post.mean).sample
    return video, _ours(post.mean), _ours(post.logvar), _ours(decoded)


@pytest.fixture(scope="module")
def ours(wan_dir):
    return load_wan_vae(wan_dir[0])


def test_config_is_mapped(wan_dir, ours):
    _, model = wan_dir
    cfg = ours.config
    assert (cfg.base_dim, cfg.z_dim, cfg.dim_mult, cfg.num_res_blocks) == (8, 4, (1, 2, 4, 4), 2)
    assert cfg.temporal_downsample == (False, True, True)
    assert cfg.latents_mean == tuple(model.config.latents_mean)
    assert cfg.latents_std == tuple(model.config.latents_std)
    n_torch = sum(p.numel() for p in model.parameters())
    assert vae_lib.count_params(cfg) == n_torch


@pytest.mark.parametrize("streamed", [True, False])
def test_encode_matches_diffusers(ours, reference, streamed):
    video, mean, logvar, _ = reference
    got_mean, got_logvar = ours.encode_distribution(video, streamed=streamed)
    assert got_mean.shape == mean.shape == (2, 3, 2, 3, 4)
    assert np.abs(mean).max() > 0.1  # a real signal, not zeros
    np.testing.assert_allclose(np.asarray(got_mean), mean, atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.asarray(got_logvar), logvar, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(ours.encode(video, streamed=streamed), got_mean)


@pytest.mark.parametrize("streamed", [True, False])
def test_decode_matches_diffusers(ours, reference, streamed):
    _, mean, _, decoded = reference
    got = np.asarray(ours.decode(mean, streamed=streamed))
    assert got.shape == decoded.shape == VIDEO_SHAPE
    assert (np.abs(decoded) < 0.999).mean() > 0.5  # mostly unclamped values are compared
    np.testing.assert_allclose(got, decoded, atol=1e-4, rtol=0)


def test_normalize_matches_diffusers_pipeline_convention(wan_dir, ours, reference):
    _, model = wan_dir
    _, mean, _, _ = reference
    m = np.asarray(model.config.latents_mean, np.float32)
    s = np.asarray(model.config.latents_std, np.float32)
    # diffusers' Wan pipelines: latents = (latents - mean) * (1 / std)
    np.testing.assert_allclose(ours.normalize(mean), (mean - m) * (1.0 / s), rtol=1e-5, atol=1e-6)


def test_cli_round_trip(wan_dir, ours, reference, tmp_path, capsys):
    src, _ = wan_dir
    dst = tmp_path / "vae_orbax"
    assert cli.main(["convert", "wan-vae", str(src), str(dst)]) == 0
    assert "wrote" in capsys.readouterr().out
    back = vae_lib.load(dst)
    assert back.config == ours.config
    video, mean, _, _ = reference
    # the full path compiles fastest; the weights are what the round trip is about
    np.testing.assert_array_equal(back.encode(video, streamed=False), ours.encode(video, streamed=False))
    np.testing.assert_array_equal(back.decode(mean, streamed=False), ours.decode(mean, streamed=False))
    # an existing destination is not replaced silently
    assert convert.main(["wan-vae", str(src), str(dst)]) == 1
    assert "already exists" in capsys.readouterr().err


def test_pickled_weights_are_refused(wan_dir, tmp_path, capsys):
    src, _ = wan_dir
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    shutil.copy(src / "config.json", pickled / "config.json")
    (pickled / "diffusion_pytorch_model.bin").write_bytes(b"not even read")
    with pytest.raises(ConversionError, match="refusing to read pickled.*safetensors"):
        load_wan_vae(pickled)
    pth = tmp_path / "Wan2.1_VAE.pth"
    pth.write_bytes(b"not even read")
    assert convert.main(["wan-vae", str(pth), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "Wan2.1_VAE.pth" in err and "save_pretrained" in err
    assert not os.path.exists(tmp_path / "out")


def _variant(src, dst, **changes):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg.update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_mismatched_config_names_the_keys(wan_dir, tmp_path):
    src, _ = wan_dir
    bad = _variant(src, tmp_path / "bad", num_res_blocks=1)
    with pytest.raises(ConversionError, match="do not match the architecture") as err:
        load_wan_vae(bad)
    # the decoder's third res block per stage exists in the file but not in the config
    assert "unexpected ['decoder.up_blocks.0.resnets.2" in str(err.value)
    assert "wrong shape" in str(err.value) and str(bad) in str(err.value)


def test_unsupported_variants_are_named(wan_dir, tmp_path):
    src, _ = wan_dir
    with pytest.raises(ConversionError, match="is_residual=True"):
        load_wan_vae(_variant(src, tmp_path / "wan22", is_residual=True))
    with pytest.raises(ConversionError, match="AutoencoderKLWan"):
        load_wan_vae(_variant(src, tmp_path / "other", _class_name="AutoencoderKL"))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_wan_vae(tmp_path / "missing")


def test_cli_lists_every_converter(capsys):
    with pytest.raises(SystemExit) as exit_:
        convert.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in ("wan-vae", "wav2vec2", "t5"):
        assert name in out


@pytest.mark.parametrize("what", ["wav2vec2", "t5"])
def test_cli_dispatches_encoder_converters(what, tmp_path, capsys):
    # a missing source reaches the encoder's own converter, whose error names it
    missing = tmp_path / f"no_{what}_here"
    assert convert.main([what, str(missing), str(tmp_path / "out")]) == 1
    assert str(missing) in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")
