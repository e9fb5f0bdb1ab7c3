"""T5 / umT5 port vs transformers' T5EncoderModel / UMT5EncoderModel, and the tokenizer."""

import json
import os
import random
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import T5Config as HFT5Config
from transformers import T5EncoderModel, UMT5Config, UMT5EncoderModel
from transformers import T5Tokenizer as HFTokenizer
from transformers.models.t5.modeling_t5 import T5Attention

from omnijax.models.encoders import get_text_encoder
from omnijax.models.encoders.t5 import T5Config, convert_to_orbax, load_t5, relative_position_buckets
from omnijax.models.encoders.tokenizer import T5Tokenizer

VOCAB = 256  # model vocabulary; the tokenizer below has 120 pieces + 100 sentinels
L = 16  # token length used everywhere, so each model compiles once

VARIANTS = {
    "t5-relu": (T5EncoderModel, HFT5Config, "relu"),  # original T5
    "t5-gated": (T5EncoderModel, HFT5Config, "gated-gelu"),  # T5 v1.1
    "umt5": (UMT5EncoderModel, UMT5Config, "gated-gelu"),  # per-layer position bias
}

SENTENCES = [
    "A person waves the left hand.",
    "the man speaks  quickly,   then nods!",
    "Zebra ünïcode 123 kalomi",
    "",
    "a woman in a red shirt talks to the camera and raises her right arm slowly while smiling at the studio",
]


def _tiny_hf(variant: str, seed: int = 0):
    model_cls, cfg_cls, ff = VARIANTS[variant]
    torch.manual_seed(seed)
    cfg = cfg_cls(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, feed_forward_proj=ff,
                  relative_attention_num_buckets=8, relative_attention_max_distance=20)
    model = model_cls(cfg).eval()
    with torch.no_grad():  # RMS-norm scales start at 1: move them so a missing scale would show
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.fixture(scope="session")
def spm_dir(tmp_path_factory):
    """A SentencePiece unigram model trained here (no tokenizer can be downloaded) with T5's
    special ids: pad 0, eos 1, unk 2."""
    import sentencepiece

    rng = random.Random(0)
    syllables = "ka lo mi re tu sa no pe vi da".split()
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(150)]
    words += ("the a person talks waves smiles raises hand left right arm slowly quickly camera looks at woman "
              "man red blue shirt background studio speaks sings nods head turns").split()
    sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + rng.choice([".", "!", "?", ""])
                 for _ in range(400)]
    path = tmp_path_factory.mktemp("spm")
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_prefix=str(path / "spiece"), vocab_size=120, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, minloglevel=2)
    return path


@pytest.fixture(scope="session")
def hf_tokenizer(spm_dir, tmp_path_factory):
    """transformers' T5Tokenizer built from the SentencePiece model and saved (tokenizer.json)."""
    tok = HFTokenizer.from_pretrained(str(spm_dir))
    path = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(path)
    assert os.path.isfile(path / "tokenizer.json")
    return tok, path


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, hf_tokenizer):
    """variant -> (HF model, directory with safetensors + tokenizer files)."""
    out = {}
    for variant in VARIANTS:
        model = _tiny_hf(variant)
        path = tmp_path_factory.mktemp(variant)
        model.save_pretrained(path, safe_serialization=True)
        for f in os.listdir(hf_tokenizer[1]):
            shutil.copy(hf_tokenizer[1] / f, path / f)
        out[variant] = (model, str(path))
    return out


def _ids(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (2, L), generator=g)
    mask = torch.ones(2, L, dtype=torch.long)
    mask[1, 9:] = 0  # second row: 9 real tokens, then padding
    return ids, mask


def test_relative_position_buckets_equal_transformers():
    rel = torch.arange(300)[None, :] - torch.arange(300)[:, None]
    for num_buckets, max_distance in ((32, 128), (8, 20), (32, 16), (64, 256)):
        ref = T5Attention._relative_position_bucket(rel, True, num_buckets, max_distance).numpy()
        np.testing.assert_array_equal(relative_position_buckets(300, 300, num_buckets, max_distance), ref)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_last_hidden_state_matches_transformers_on_padded_batch(saved_models, variant):
    hf_model, path = saved_models[variant]
    ids, mask = _ids()
    with torch.no_grad():
        ref = hf_model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    ours = np.asarray(load_t5(path)(jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())))
    valid = mask.numpy().astype(bool)  # padded query rows are not defined by transformers
    np.testing.assert_allclose(ours[valid], ref[valid], atol=1e-4, rtol=0)
    if variant != "umt5":  # the mask-free path once is enough (each path is one more compile)
        return
    # without a mask, every position counts
    with torch.no_grad():
        ref = hf_model(input_ids=ids).last_hidden_state.numpy()
    np.testing.assert_allclose(np.asarray(load_t5(path)(jnp.asarray(ids.numpy()))), ref, atol=1e-4, rtol=0)


def test_umt5_uses_a_bias_table_per_layer(saved_models):
    assert load_t5(saved_models["umt5"][1]).config.per_layer_position_bias
    t5 = load_t5(saved_models["t5-gated"][1])
    assert not t5.config.per_layer_position_bias and not hasattr(t5.blocks[1].attention, "relative_attention_bias")


@pytest.mark.parametrize("backend", ["tokenizer.json", "spiece.model"])
def test_tokenizer_matches_transformers(hf_tokenizer, spm_dir, backend):
    hf_tok, tok_dir = hf_tokenizer
    ours = T5Tokenizer(tok_dir if backend == "tokenizer.json" else spm_dir)
    assert ours.backend == ("tokenizers" if backend == "tokenizer.json" else "sentencepiece")
    for max_length in (L, 64):  # L truncates the long sentence (keeping </s>), 64 does not
        ref = hf_tok(SENTENCES, padding="max_length", truncation=True, max_length=max_length)
        ids, mask = ours(SENTENCES, max_length)
        np.testing.assert_array_equal(ids, np.asarray(ref["input_ids"]))
        np.testing.assert_array_equal(mask, np.asarray(ref["attention_mask"]).astype(bool))
    assert ids[3, 0] == ours.eos_id and not mask[3, 1:].any()  # "" -> just </s>


def test_text_encoder_interface_equals_transformers_pipeline(saved_models, hf_tokenizer):
    hf_model, path = saved_models["umt5"]
    enc = get_text_encoder(f"t5:{path}:max_length={L},batch_size=4")
    texts = SENTENCES[:3]  # 3 texts -> padded to a batch of 4
    states, mask = enc(texts)
    assert enc.dim == 32 and enc.max_length == L
    assert states.shape == (3, L, 32) and states.dtype == np.float32 and mask.shape == (3, L)
    tok = hf_tokenizer[0](texts, padding="max_length", truncation=True, max_length=L, return_tensors="pt")
    with torch.no_grad():
        ref = hf_model(**tok).last_hidden_state.numpy()
    np.testing.assert_array_equal(mask, tok["attention_mask"].numpy().astype(bool))
    np.testing.assert_allclose(states[mask], ref[mask], atol=1e-4, rtol=0)
    assert np.all(states[~mask] == 0)  # padding zeroed for deterministic caches
    # a text's states do not depend on what it is batched with (5 texts -> batches of 4 + 1)
    more, _ = enc(SENTENCES)
    np.testing.assert_allclose(more[:3], states, atol=1e-5, rtol=0)


def test_orbax_round_trip_keeps_outputs_and_tokenizer(saved_models, tmp_path):
    _, path = saved_models["t5-gated"]
    dst = convert_to_orbax(path, tmp_path / "orbax")
    assert os.path.isfile(os.path.join(dst, "tokenizer.json"))
    ids, mask = (jnp.asarray(a.numpy()) for a in _ids(1))
    np.testing.assert_array_equal(np.asarray(load_t5(dst)(ids, mask)), np.asarray(load_t5(path)(ids, mask)))
    a, _ = get_text_encoder(f"t5:{dst}:max_length={L}")(SENTENCES[:2])
    b, _ = get_text_encoder(f"t5:{path}:max_length={L}")(SENTENCES[:2])
    np.testing.assert_array_equal(a, b)


def test_bfloat16_checkpoint_loads_as_float32(saved_models, tmp_path):
    """umT5-XXL and friends ship bf16 safetensors: read them (NumPy has no bf16) and widen."""
    hf_model, path = saved_models["t5-relu"]
    bf16 = _tiny_hf("t5-relu").to(torch.bfloat16)
    bf16.save_pretrained(tmp_path, safe_serialization=True)
    ids, mask = _ids(2)
    with torch.no_grad():
        ref = bf16.float()(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    ours = np.asarray(load_t5(tmp_path)(jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())))
    valid = mask.numpy().astype(bool)
    np.testing.assert_allclose(ours[valid], ref[valid], atol=1e-4, rtol=0)


def test_bfloat16_weights_option(saved_models):
    _, path = saved_models["umt5"]
    full, mask = get_text_encoder(f"t5:{path}:max_length={L}")(SENTENCES[:2])
    half, mask16 = get_text_encoder(f"t5:{path}:max_length={L},dtype=bfloat16")(SENTENCES[:2])
    assert half.dtype == np.float32 and np.array_equal(mask, mask16)
    assert np.abs(half - full).max() < 0.1 * np.abs(full).max()  # bf16 rounding, same function
    with pytest.raises(ValueError, match="dtype="):
        get_text_encoder(f"t5:{path}:dtype=int8")


def test_sharded_checkpoint_in_diffusers_layout(saved_models, tmp_path):
    """Wan-style pipelines: `text_encoder/` (sharded safetensors + index) beside `tokenizer/`."""
    hf_model, path = saved_models["umt5"]
    hf_model.save_pretrained(tmp_path / "text_encoder", safe_serialization=True, max_shard_size="20KB")
    assert os.path.isfile(tmp_path / "text_encoder" / "model.safetensors.index.json")
    shutil.copytree(path, tmp_path / "tokenizer", ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
    a, mask = get_text_encoder(f"t5:{tmp_path / 'text_encoder'}:max_length={L}")(SENTENCES[:2])
    b, _ = get_text_encoder(f"t5:{path}:max_length={L}")(SENTENCES[:2])
    np.testing.assert_array_equal(a, b)


def test_refuses_pickle_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"pickle.*save_pretrained\(DIR, safe_serialization=True\)"):
        load_t5(tmp_path)


def test_config_and_weight_mismatches_are_named(saved_models, tmp_path):
    _, path = saved_models["t5-relu"]

    def variant_dir(name, edit_cfg=None, drop=None):
        d = tmp_path / name
        shutil.copytree(path, d)
        if edit_cfg:
            cfg = json.loads((d / "config.json").read_text())
            cfg.update(edit_cfg)
            (d / "config.json").write_text(json.dumps(cfg))
        if drop:
            tensors = load_file(str(d / "model.safetensors"))
            del tensors[drop]
            save_file(tensors, str(d / "model.safetensors"))
        return d

    with pytest.raises(ValueError, match=r"config.json.*unsupported activation 'swiglu'"):
        load_t5(variant_dir("act", {"feed_forward_proj": "gated-swiglu"}))
    with pytest.raises(ValueError, match=r"model_type is 'bert'"):
        load_t5(variant_dir("type", {"model_type": "bert"}))
    bias = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    with pytest.raises(ValueError, match="missing weights.*" + bias.replace(".", r"\.")):
        load_t5(variant_dir("missing", drop=bias))
    with pytest.raises(ValueError, match=r"shape mismatches.*wi"):
        load_t5(variant_dir("shape", {"d_ff": 48}))
    no_tok = variant_dir("no_tok")
    for f in ("tokenizer.json", "tokenizer_config.json"):
        os.remove(no_tok / f)
    with pytest.raises(FileNotFoundError, match="no tokenizer.json or spiece.model here"):
        get_text_encoder(f"t5:{no_tok}")
    with pytest.raises(ValueError, match="unknown options"):
        get_text_encoder(f"t5:{path}:maxlen=8")
    with pytest.raises(ValueError, match="feed_forward_proj"):
        T5Config(feed_forward_proj="double-gated-gelu")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["t5-relu", "umt5"])
def test_published_sizes_match_transformers(variant, tmp_path):
    """t5-small (relu, 6 x 512) and umt5-small (gated-gelu, 8 x 512, per-layer bias) layouts at
    full size with random weights, 64 tokens with padding (buckets reach the log range)."""
    model_cls, cfg_cls, ff = VARIANTS[variant]
    size = dict(d_ff=2048, num_layers=6, num_heads=8) if variant == "t5-relu" else {}
    torch.manual_seed(0)
    hf_model = model_cls(cfg_cls(vocab_size=32128, feed_forward_proj=ff, **size)).eval()
    hf_model.save_pretrained(tmp_path, safe_serialization=True)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 32128, (2, 64), generator=g)
    mask = torch.ones(2, 64, dtype=torch.long)
    mask[1, 40:] = 0
    with torch.no_grad():
        ref = hf_model(input_ids=ids, attention_mask=mask).last_hidden_state.numpy()
    ours = np.asarray(load_t5(tmp_path)(jnp.asarray(ids.numpy()), jnp.asarray(mask.numpy())))
    valid = mask.numpy().astype(bool)
    np.testing.assert_allclose(ours[valid], ref[valid], atol=1e-4, rtol=0)
