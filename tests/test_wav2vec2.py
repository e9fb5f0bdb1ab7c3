"""wav2vec2 port vs transformers' Wav2Vec2Model (random weights, both norm variants)."""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import Wav2Vec2Config as HFConfig
from transformers import Wav2Vec2Model as HFModel

from omnijax.models.encoders import get_audio_encoder
from omnijax.models.encoders.wav2vec2 import (Wav2Vec2Config, audio_encoder_from_spec, convert_to_orbax,
                                              load_wav2vec2, parse_layers)

VARIANTS = {
    # base style: group-norm conv stack, post-norm layers, no conv bias
    "base": dict(feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False),
    # large / XLSR style: layer-norm conv stack with bias, pre-norm layers + final norm
    "large": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
}


N = 6400  # samples per test clip (0.4 s): one shape, so each variant compiles few programs


def _tiny_hf(variant: str, seed: int = 0) -> HFModel:
    torch.manual_seed(seed)
    # 3 convs with stride 80 (published models: 7 convs, stride 320) keep compiles short on CPU;
    # the code paths are the same (first conv normed in "group", every conv in "layer").
    cfg = HFConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                   conv_dim=(16,) * 3, conv_kernel=(10, 3, 3), conv_stride=(5, 4, 4),
                   num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, **VARIANTS[variant])
    model = HFModel(cfg).eval()
    with torch.no_grad():  # move every weight off its init (norms at 1/0, weight-norm g, ...)
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """variant -> (HF model, its safetensors directory)."""
    out = {}
    for variant in VARIANTS:
        model = _tiny_hf(variant)
        path = tmp_path_factory.mktemp(f"w2v_{variant}")
        model.save_pretrained(path, safe_serialization=True)
        out[variant] = (model, str(path))
    return out


@pytest.fixture(params=sorted(VARIANTS))
def saved(request, saved_models):
    return (request.param,) + saved_models[request.param]


@pytest.fixture
def base_dir(saved_models):
    return saved_models["base"][1]


def _wave(seed, batch=1):
    return np.random.default_rng(seed).standard_normal((batch, N)).astype(np.float32)


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    wave = torch.randn(2, N, generator=g)
    mask = torch.ones(2, N, dtype=torch.long)
    mask[1, 3900:] = 0  # second clip is shorter: padded with zeros
    wave[1, 3900:] = 0
    return wave, mask


def test_hidden_states_match_transformers_on_padded_batch(saved):
    variant, hf_model, path = saved
    wave, mask = _batch()
    with torch.no_grad():
        ref = hf_model(wave, attention_mask=mask, output_hidden_states=True)
    ours = load_wav2vec2(path)
    hidden, last = ours.forward(jnp.asarray(wave.numpy()), jnp.asarray(mask.numpy()))
    assert len(hidden) == len(ref.hidden_states) == 3
    frames = np.asarray(ours.frame_mask(jnp.asarray(mask.numpy()), hidden[0].shape[1]))
    assert frames[0].all() and 0 < frames[1].sum() < frames.shape[1]
    # transformers' padded query rows are junk it never promises anything about: compare real frames.
    for i, (a, b) in enumerate(zip(hidden + [last], list(ref.hidden_states) + [ref.last_hidden_state])):
        np.testing.assert_allclose(np.asarray(a)[frames], b.numpy()[frames], atol=1e-4, rtol=0,
                                   err_msg=f"{variant}: hidden state {i}")
    # the plain call returns the same list
    np.testing.assert_array_equal(np.asarray(ours(jnp.asarray(wave.numpy()), jnp.asarray(mask.numpy()))[-1]),
                                  np.asarray(hidden[-1]))


def test_hidden_states_match_transformers_without_mask(saved):
    variant, hf_model, path = saved
    wave = torch.from_numpy(_wave(2, batch=2))
    with torch.no_grad():
        ref = hf_model(wave, output_hidden_states=True)
    hidden, last = load_wav2vec2(path).forward(jnp.asarray(wave.numpy()))
    for a, b in zip(hidden + [last], list(ref.hidden_states) + [ref.last_hidden_state]):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-4, rtol=0)
    if variant == "large":  # pre-norm: the final norm is only in last_hidden_state
        assert not np.allclose(np.asarray(hidden[-1]), np.asarray(last))


def test_legacy_weight_norm_names_and_ctc_prefix_load(saved, tmp_path):
    """Older checkpoints store weight_g / weight_v and Wav2Vec2ForCTC prefixes keys with `wav2vec2.`."""
    _, hf_model, path = saved
    tensors = load_file(os.path.join(path, "model.safetensors"))
    renamed = {}
    for k, v in tensors.items():
        k = k.replace("parametrizations.weight.original0", "weight_g").replace(
            "parametrizations.weight.original1", "weight_v")
        renamed["wav2vec2." + k] = v
    renamed["lm_head.weight"] = np.zeros((5, 32), np.float32)  # a head we ignore
    save_file(renamed, str(tmp_path / "model.safetensors"))
    shutil.copy(os.path.join(path, "config.json"), tmp_path / "config.json")
    wave = jnp.asarray(_wave(0, batch=2))
    np.testing.assert_array_equal(np.asarray(load_wav2vec2(tmp_path)(wave)[-1]),
                                  np.asarray(load_wav2vec2(path)(wave)[-1]))


def test_orbax_round_trip_and_spec(saved, tmp_path):
    variant, _, path = saved
    dst = convert_to_orbax(path, tmp_path / "orbax")
    wave = jnp.asarray(_wave(3, batch=2))
    a, b = load_wav2vec2(path)(wave), load_wav2vec2(dst)(wave)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    enc = get_audio_encoder(f"wav2vec2:{dst}:layers=all")
    assert enc.dim == 3 * 32


@pytest.mark.parametrize("variant,layers,reduce", [("base", "1-2", "concat"), ("large", "0+2", "mean")])
def test_audio_encoder_gives_video_rate_features_equal_to_the_unpadded_model(saved_models, variant, layers,
                                                                              reduce):
    """Bucket padding must not change the features: padded + masked == the clip alone."""
    path = saved_models[variant][1]
    sr, fps = 16000, 25.0
    wave = _wave(4)[0]  # 0.4 s, padded to 0.5 s by the 0.25 s bucket
    enc = audio_encoder_from_spec(path, layers=layers, reduce=reduce, bucket_seconds=0.25)
    assert enc.config.frame_rate == 200.0  # this tiny conv stack strides 80 samples
    feats = enc(wave, sr, fps)
    dim = 64 if reduce == "concat" else 32
    assert enc.dim == dim and feats.shape == (10, dim) and feats.dtype == np.float32
    norm = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
    hidden, _ = load_wav2vec2(path).forward(jnp.asarray(np.stack([norm, norm])))  # the clip alone
    picked = [np.asarray(hidden[i])[0] for i in parse_layers(layers, 2)]
    direct = np.concatenate(picked, -1) if reduce == "concat" else np.mean(picked, 0)  # (80, dim) at 200 Hz
    np.testing.assert_allclose(enc.encoder_features(norm), direct, atol=1e-5, rtol=0)
    # 200 Hz -> 25 fps: frame i is the mean of rows 8i .. 8i+7
    np.testing.assert_allclose(feats, direct.reshape(10, 8, dim).mean(1), atol=1e-5, rtol=0)
    # resampled input and an explicit frame count
    assert enc(wave[::2], 8000, 30.0, num_frames=9).shape == (9, dim)


def test_long_audio_windows_equal_each_window_encoded_alone(base_dir):
    """Past chunk_seconds every window (chunk + context each side, padded to one length) is
    encoded exactly as that stretch of audio alone, and its middle lands at the right frames."""
    wave = np.random.default_rng(5).standard_normal(16000).astype(np.float32)  # 1 s
    chunked = audio_encoder_from_spec(base_dir, chunk_seconds=0.25, context_seconds=0.125)
    exact = audio_encoder_from_spec(base_dir, bucket_seconds=0.5)
    out = chunked.encoder_features(wave)
    assert out.shape == (200, 32)
    chunk, ctx, stride = 4000, 2000, 80
    for start in range(0, 16000, chunk):
        lo = max(0, start - ctx)
        alone = exact.encoder_features(wave[lo: start + chunk + ctx])
        f0 = (start - lo) // stride
        np.testing.assert_allclose(out[start // stride: (start + chunk) // stride], alone[f0: f0 + chunk // stride],
                                   atol=1e-5, rtol=0, err_msg=f"window at sample {start}")


def test_layer_specs():
    assert parse_layers("all", 12) == tuple(range(13))
    assert parse_layers("8-12", 12) == (8, 9, 10, 11, 12)
    assert parse_layers(4, 12) == (4,)
    assert parse_layers("1+3", 12) == (1, 3)
    assert parse_layers("last", 12) == "last"
    for bad in ("13", "x", "5-20"):
        with pytest.raises(ValueError, match="layers="):
            parse_layers(bad, 12)


def _copy_dir(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_refuses_pickle_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"pickle.*save_pretrained\(DIR, safe_serialization=True\)"):
        load_wav2vec2(tmp_path)


def test_config_and_weight_mismatches_are_named(saved, tmp_path):
    _, _, path = saved
    bad_norm = _copy_dir(path, tmp_path / "bad_norm")
    cfg = json.loads((bad_norm / "config.json").read_text())
    cfg["feat_extract_norm"] = "batch"
    (bad_norm / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"config.json.*feat_extract_norm 'batch'"):
        load_wav2vec2(bad_norm)

    missing = _copy_dir(path, tmp_path / "missing")
    tensors = load_file(str(missing / "model.safetensors"))
    del tensors["encoder.layers.1.attention.q_proj.weight"]
    save_file(tensors, str(missing / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing weights.*encoder\.layers\.1\.attention\.q_proj\.weight"):
        load_wav2vec2(missing)

    shape = _copy_dir(path, tmp_path / "shape")
    cfg = json.loads((shape / "config.json").read_text())
    cfg["intermediate_size"] = 48
    (shape / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"shape mismatches.*intermediate_dense"):
        load_wav2vec2(shape)

    with pytest.raises(ValueError, match="adapter"):
        Wav2Vec2Config.from_hf({"model_type": "wav2vec2", "add_adapter": True})
    with pytest.raises(ValueError, match="shorter than one wav2vec2 frame"):
        load_wav2vec2(path)(jnp.zeros((1, 5)))
    with pytest.raises(ValueError, match="unknown options"):
        get_audio_encoder(f"wav2vec2:{path}:layer=all")


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_published_sizes_match_transformers(variant, tmp_path):
    """wav2vec2-base (group norm, post-norm, 12 x 768) and wav2vec2-large-lv60 layout (layer norm,
    pre-norm, 24 x 1024) at full size with random weights, 1 s of audio, padded batch."""
    size = {} if variant == "base" else dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                                             intermediate_size=4096)
    torch.manual_seed(0)
    hf_model = HFModel(HFConfig(**size, **VARIANTS[variant])).eval()
    hf_model.save_pretrained(tmp_path, safe_serialization=True)
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(2, 16000, generator=g)
    mask = torch.ones(2, 16000, dtype=torch.long)
    mask[1, 11000:] = 0
    wave[1, 11000:] = 0
    with torch.no_grad():
        ref = hf_model(wave, attention_mask=mask, output_hidden_states=True)
    ours = load_wav2vec2(tmp_path)
    hidden, last = ours.forward(jnp.asarray(wave.numpy()), jnp.asarray(mask.numpy()))
    frames = np.asarray(ours.frame_mask(jnp.asarray(mask.numpy()), hidden[0].shape[1]))
    for i, (a, b) in enumerate(zip(hidden + [last], list(ref.hidden_states) + [ref.last_hidden_state])):
        np.testing.assert_allclose(np.asarray(a)[frames], b.numpy()[frames], atol=1e-4, rtol=0,
                                   err_msg=f"{variant}: hidden state {i}")


def test_preprocessor_config_is_read(base_dir, tmp_path):
    from omnijax.models.encoders.wav2vec2 import config_from_hf_dir

    assert config_from_hf_dir(base_dir).do_normalize  # no preprocessor_config.json: HF default
    d = _copy_dir(base_dir, tmp_path / "pre")
    (d / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False, "sampling_rate": 16000}))
    cfg = config_from_hf_dir(d)
    assert not cfg.do_normalize and cfg.frame_rate == 200.0 and cfg.num_frames(6400) == 80
