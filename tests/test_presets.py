"""`omnijax presets`: the listing, the preset fields the rest of the code relies on, FLOP formula."""

import dataclasses

import pytest

from omnijax import presets
from omnijax.models.mmdit import PRESETS, MMDiTConfig, num_params


def test_tiny_preset_matches_the_shared_contract():
    cfg = MMDiTConfig.tiny()
    assert (cfg.latent_channels, cfg.audio_dim, cfg.text_dim, cfg.pose_channels) == (16, 80, 64, 13)
    assert 64 <= cfg.width <= 128 and cfg.depth == 2 and 2 <= cfg.heads <= 4
    for field in ("depth", "latent_channels", "audio_dim", "text_dim", "pose_channels", "audio_window",
                  "dtype", "param_dtype"):
        assert field in {f.name for f in dataclasses.fields(MMDiTConfig)}
    base = MMDiTConfig.base()
    assert (base.width, base.heads, base.ffn) == (1536, 12, 8960)  # Wan2.1-1.3B's block shape
    assert MMDiTConfig.tiny(depth=3).depth == 3   # overrides pass through
    with pytest.raises(ValueError, match="unknown MMDiT preset"):
        MMDiTConfig.preset("huge")


def test_flop_formula():
    # 6 N T + 12 L T^2 W over T tokens, per token
    assert presets.train_flops_per_token(10, 2, 4, 100) == 6 * 10 + 12 * 2 * 100 * 4
    assert presets.forward_flops_per_token(10, 2, 4, 100) * 3 == presets.train_flops_per_token(10, 2, 4, 100)


def test_cli_lists_every_preset_with_counts(capsys):
    assert presets.main(["--tokens", "1024"]) == 0
    out = capsys.readouterr().out
    counts = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0] in PRESETS and len(cells) == 10:
            counts[cells[0]] = int(cells[5].replace(",", ""))
    assert set(counts) == set(PRESETS)
    assert counts["tiny"] == num_params(MMDiTConfig.tiny())
    assert counts["tiny"] < counts["small"] < counts["base"] < counts["large"]
    assert 1.1e9 < counts["base"] < 1.6e9   # about Wan2.1-1.3B
    assert 5e9 < counts["large"] < 9e9
    assert "VAE presets" in out
    assert "1,024 tokens" in out


def test_cli_rejects_bad_tokens():
    with pytest.raises(SystemExit):
        presets.main(["--tokens", "0"])
