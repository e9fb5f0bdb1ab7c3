"""The MMDiT and VAE objectives: losses as documented, per-mix breakdown, curriculum
keep rates in the batches the trainer is fed."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
import omnihuman  # noqa: E402
import vae as vae_config  # noqa: E402

from omnijax.diffusion import flow  # noqa: E402
from omnijax.data import curriculum  # noqa: E402
from omnijax.models import partitioning  # noqa: E402
from omnijax.models.conditions import CONDITIONS  # noqa: E402
from omnijax.train import objectives  # noqa: E402


def _mmdit_cfg(stage=3, motion_prob=0.0, batch=8):
    c = omnihuman.get_config(f"size=tiny,stage={stage},depth=1")
    c.data.update(latent_height=4, latent_width=4, text_len=8)
    c.train.batch_size = batch
    c.objective_opts.motion_prob = motion_prob
    return c


def _one_device_mesh():
    return partitioning.make_mesh({"fsdp": 1}, jax.devices()[:1])


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_curriculum_keep_rates_in_fed_batches(stage):
    cfg = _mmdit_cfg(stage)
    obj = objectives.build(cfg)
    data = obj.make_data(cfg, _one_device_mesh())
    batches = [next(data) for _ in range(60)]                      # 480 samples
    cat = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    want = curriculum.get_stage(stage).ratios()
    assert cfg.curriculum.ratios.to_dict() == want                 # config spells the stage out
    n = len(cat["keep_ref"])
    for c in ("ref", "text"):
        tol = 4 * np.sqrt(want[c] * (1 - want[c]) / n) + 1e-9
        assert abs(cat[f"keep_{c}"].mean() - want[c]) <= tol, c
    for c, ok in (("audio", cat["audio_ok"]), ("pose", cat["pose_ok"])):
        keep = cat[f"keep_{c}"]
        assert not keep[~ok].any()                                # failed filter -> dropped
        rate = keep[ok].mean()
        tol = 4 * np.sqrt(max(want[c] * (1 - want[c]), 1e-12) / ok.sum()) + 1e-9
        assert abs(rate - want[c]) <= tol, (c, rate, want[c])
    # the batches are a pure function of (seed, index): a restarted iterator repeats them
    data.set_state(b'{"next": 3}')
    np.testing.assert_array_equal(next(data)["latents"], batches[3]["latents"])


def test_ratio_override_from_config():
    cfg = _mmdit_cfg(2)
    cfg.curriculum.ratios.audio = 1.0
    obj = objectives.build(cfg)
    data = obj.make_data(cfg, _one_device_mesh())
    b = next(data)
    np.testing.assert_array_equal(b["keep_audio"], b["audio_ok"])


def test_mmdit_loss_is_flow_matching_with_mix_breakdown():
    cfg = _mmdit_cfg(3, batch=4)
    obj = objectives.build(cfg)
    model = obj.model_fn(nnx.Rngs(0))
    batch = next(obj.make_data(cfg, _one_device_mesh()))
    graphdef, state = nnx.split(model)
    rng = jax.random.key(7)

    from omnijax.data import keypoints as kpt
    # the heatmaps the guider must see, rendered by numpy from the batch's keypoints
    maps = kpt.heatmaps_from_normalized(batch["keypoints"], obj.Hp, obj.Wp, obj.model_config.pose_sigma)
    assert maps.shape == (4, obj.T, obj.Hp, obj.Wp, 13) and maps.max() > 0.5

    @jax.jit
    def both(state, batch, maps):
        m = nnx.merge(graphdef, state)
        loss, aux = obj.loss(m, batch, rng)
        # by hand: the documented recipe (no motion prefix: motion_prob = 0; tiny: shift 1)
        _, k_noise = jax.random.split(rng)
        d = flow.noised(k_noise, batch["latents"], shift=obj.shift)
        keep = {c: batch[f"keep_{c}"] for c in CONDITIONS}
        pred = m(d["x_t"], d["t"], ref=batch["ref_latent"], audio=batch["audio"],
                 pose=maps, text=batch["text"],
                 text_mask=batch["text_mask"], keep=keep)
        per = jnp.mean(jnp.square(pred - d["target"]).reshape(pred.shape[0], -1), axis=1)
        return loss, aux, per

    loss, aux, per = both(state, batch, maps)
    np.testing.assert_allclose(loss, per.mean(), rtol=1e-5)
    code = sum(batch[f"keep_{c}"].astype(int) << i for i, c in enumerate(CONDITIONS))
    np.testing.assert_array_equal(aux["mix_count"], np.bincount(code, minlength=16))
    np.testing.assert_allclose(aux["mix_loss_sum"], np.bincount(code, weights=np.asarray(per), minlength=16),
                               rtol=1e-5, atol=1e-6)
    for c in CONDITIONS:
        assert float(aux[f"keep_rate/{c}"]) == pytest.approx(batch[f"keep_{c}"].mean())
    assert objectives.MIX_NAMES[0b0011] == "ref_text"
    np.testing.assert_array_equal(aux["prefix_count"], [4, 0])


# ------------------------------------------------------------------ motion frames (README "Long video")

def _frames_of(g):
    """Video frames of latent frame g on the window's timeline."""
    return [0] if g == 0 else list(range(4 * g - 3, 4 * g + 1))


@pytest.fixture(scope="module")
def live_mmdit():
    """Objective + a tiny MMDiT with every weight random (adaLN-zero would zero gradients)."""
    from omnijax.models.mmdit import random_mmdit
    cfg = _mmdit_cfg(3, motion_prob=0.25, batch=2)
    obj = objectives.build(cfg)
    model = random_mmdit(obj.model_config, seed=1)
    batch = next(obj.make_data(cfg, _one_device_mesh()))
    batch = dict(batch, **{f"keep_{c}": np.ones(2, bool) for c in CONDITIONS})
    kp = batch["keypoints"].copy()
    kp[..., :2] = 0.1 + 0.8 * kp[..., :2]          # every keypoint in shot and visible
    kp[..., 2] = 1.0
    return obj, model, dict(batch, keypoints=kp)


def test_audio_and_pose_reach_every_noisy_frame_with_and_without_prefix(live_mmdit):
    """Per video frame, d loss / d audio and d loss / d pose are non-zero for every frame of
    every noisy latent frame (the first noisy one after a prefix too: 4 frames, not 1) and
    exactly zero where no noisy frame looks (audio: outside every noisy frame's window;
    pose: frames of clean latent frames). Pose is what the batch holds: keypoints, rendered
    into heatmaps inside the loss, so the gradient is taken w.r.t. their coordinates."""
    obj, model, batch = live_mmdit
    F, w = obj.F, obj.model_config.audio_window
    graphdef, state = nnx.split(model)
    prefix = jnp.asarray([0, 2], jnp.int32)

    @jax.jit
    def grads(state, audio, keypoints):
        # the state is differentiated too (and dropped): NNX's scan inside the model needs its
        # variables traced at the level of the transform that calls it
        def total(state, audio, keypoints):
            b = dict(batch, audio=audio, keypoints=keypoints)
            return obj.per_sample_loss(nnx.merge(graphdef, state), b, prefix, jax.random.key(0)).sum()
        return jax.grad(total, argnums=(0, 1, 2))(state, audio, keypoints)[1:]

    ga, gp = grads(state, jnp.asarray(batch["audio"]), jnp.asarray(batch["keypoints"]))
    ga = np.abs(np.asarray(ga)).sum(-1)                       # (B, T)
    gp = np.abs(np.asarray(gp)).reshape(*gp.shape[:2], -1).sum(-1)
    for i, m in enumerate([0, 2]):
        noisy = range(m, F)
        seen_audio = sorted({v for f in noisy for g in range(f - w, f + w + 1) if 0 <= g < F
                             for v in _frames_of(g)})
        own = sorted(v for f in noisy for v in _frames_of(f))
        for v in range(ga.shape[1]):
            assert (ga[i, v] > 0) == (v in seen_audio), (i, v, ga[i, v])
            assert (gp[i, v] > 0) == (v in own), (i, v, gp[i, v])
        assert ga[i, own].min() > 0 and gp[i, own].min() > 0
    assert ga[1, 0] == 0.0 and gp[1, :5].max() == 0.0        # prefix 2: video frames 0..4 are clean


def test_per_sample_prefix_does_not_leak_across_the_batch(live_mmdit):
    """Prefix lengths 0 and 2 in one batch give each sample the loss it has when the whole
    batch shares its prefix: the prefix is per-sample data in one compiled program."""
    obj, model, batch = live_mmdit
    graphdef, state = nnx.split(model)

    @jax.jit
    def per(state, prefix):
        return obj.per_sample_loss(nnx.merge(graphdef, state), batch, prefix, jax.random.key(3))

    mixed = np.asarray(per(state, jnp.asarray([0, 2])))
    none, both = np.asarray(per(state, jnp.asarray([0, 0]))), np.asarray(per(state, jnp.asarray([2, 2])))
    np.testing.assert_allclose(mixed[0], none[0], rtol=1e-6)
    np.testing.assert_allclose(mixed[1], both[1], rtol=1e-6)
    assert abs(none[1] - both[1]) > 1e-4 * abs(none[1])       # the prefix matters
    assert per._cache_size() == 1


def test_prefix_draws_follow_motion_prob_and_lengths():
    cfg = _mmdit_cfg(3, motion_prob=0.25)
    cfg.objective_opts.motion_frames = (1, 2)
    obj = objectives.build(cfg)
    prefix = np.asarray(obj.draw_prefix(jax.random.key(0), 20000))
    assert set(np.unique(prefix)) == {0, 1, 2}
    assert abs((prefix > 0).mean() - 0.25) < 0.02
    assert abs((prefix == 1).mean() - (prefix == 2).mean()) < 0.02
    cfg.objective_opts.motion_frames = (5,)                   # F = 5: nothing left to denoise
    with pytest.raises(ValueError, match="motion_frames"):
        objectives.build(cfg)
    assert objectives.build(_mmdit_cfg(3)).recipe()["motion_frames"] == []   # motion_prob 0


def test_vae_loss_is_reconstruction_plus_kl():
    cfg = vae_config.get_config("size=tiny,frames=5,res=16")
    obj = objectives.build(cfg)
    model = obj.model_fn(nnx.Rngs(0))
    batch = next(obj.make_data(cfg, _one_device_mesh()))
    assert batch["video"].shape == (4, 5, 16, 16, 3)
    assert -1.0 <= batch["video"].min() and batch["video"].max() <= 1.0
    graphdef, state = nnx.split(model)
    rng = jax.random.key(3)

    @jax.jit
    def both(state, batch):
        m = nnx.merge(graphdef, state)
        loss, aux = obj.loss(m, batch, rng)
        mean, logvar = m.moments(batch["video"])
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
        err = m.reconstruct(z, clamp=False) - batch["video"]
        kl = 0.5 * jnp.mean(mean ** 2 + jnp.exp(logvar) - 1 - logvar)
        o = cfg.objective_opts
        return loss, aux, o.l1_weight * jnp.abs(err).mean() + o.l2_weight * (err ** 2).mean() + o.kl_weight * kl, kl

    loss, aux, manual, kl = both(state, batch)
    np.testing.assert_allclose(loss, manual, rtol=1e-5)
    np.testing.assert_allclose(aux["kl"], kl, rtol=1e-5)
    assert obj.tokens_per_example() == 2 * 2 * 2
    assert obj.flops_per_example() > 0


def test_motion_weights_favour_what_moves():
    # a still clip but for a 2x2 patch that flips at frame 2: the patch (and, through the
    # 3x3 spread, its rim) outweighs the still pixels, frame 0 copies frame 1's weights
    video = np.zeros((1, 5, 8, 8, 3), np.float32)
    video[:, 2:, 3:5, 3:5] = 1.0
    w = np.asarray(objectives.motion_weights(jnp.asarray(video), 4.0))[..., 0]
    assert w.shape == (1, 5, 8, 8)
    np.testing.assert_allclose(w.mean(), 1.0, rtol=1e-5)
    moved = w[0, 2, 2:6, 2:6]                       # the patch and its 1-pixel rim
    still = np.delete(w[0, 2].ravel(), [8 * i + j for i in range(2, 6) for j in range(2, 6)])
    assert moved.min() > 2 * still.max()
    np.testing.assert_allclose(w[0, 0], w[0, 1])     # frame 0 takes frame 1's change (none here)
    np.testing.assert_allclose(w[0, 3], w[0, 4])     # nothing moves after frame 2
    assert w[0, 3].max() < moved.min()
    np.testing.assert_allclose(objectives.motion_weights(jnp.asarray(video), 0.0), 1.0)
    # strength scales the share of the weight on what moves; any scale of change gives the same
    np.testing.assert_allclose(objectives.motion_weights(jnp.asarray(video * 0.1), 4.0), w[..., None],
                               rtol=1e-3)   # (up to the 1e-6 guard on the mean change)


def test_vae_loss_with_motion_weight_is_the_weighted_mean():
    cfg = vae_config.get_config("size=tiny,frames=5,res=16")
    cfg.objective_opts.update(motion_weight=4.0, posterior="mean")
    obj = objectives.build(cfg)
    model = obj.model_fn(nnx.Rngs(0))
    video = jnp.asarray(next(obj.make_data(cfg, _one_device_mesh()))["video"])
    loss, aux = obj.loss(model, {"video": video}, jax.random.key(0))
    mean, _ = model.moments(video)
    err = model.reconstruct(mean, clamp=False) - video
    w = objectives.motion_weights(video, 4.0)
    np.testing.assert_allclose(aux["recon_l1"], (w * jnp.abs(err)).mean(), rtol=1e-5)
    np.testing.assert_allclose(aux["recon_l2"], (w * err ** 2).mean(), rtol=1e-5)
    assert abs(float(aux["recon_l1"]) - float(jnp.abs(err).mean())) > 1e-4   # the weights matter


def test_vae_model_fields_override_the_preset():
    cfg = vae_config.get_config("size=tiny,frames=5,res=16")
    cfg.model.decoder_base_dim = 12
    assert objectives.build(cfg).model_config.decoder_base_dim == 12
    cfg.model.decoder_base_dimm = 12
    with pytest.raises(ValueError, match="decoder_base_dimm"):
        objectives.build(cfg)


def _write_manifest(path, shapes, version=None):
    import json
    from omnijax.data import schema
    path.mkdir(parents=True, exist_ok=True)
    manifest = {"schema_version": version or schema.SCHEMA_VERSION,
                "encoders": {"audio": "wav2vec2:ckpt", "text": "bytes"},
                "buckets": {"t17_h32_w32": {"frames": 17, "height": 32, "width": 32, "shapes": shapes}}}
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_shard_features_are_checked_against_the_model_config(tmp_path):
    from omnijax.data import pipeline
    c = _mmdit_cfg()
    obj = objectives.build(c)
    expected = {k: tuple(v.shape[1:]) for k, v in obj.batch_spec(1).items()}
    spec = {k: list(v) for k, v in expected.items()}
    _write_manifest(tmp_path / "ok", spec)
    pipeline.check_cache(str(tmp_path / "ok"), None, expected)       # fits: no error
    wide_audio = {**spec, "audio": [spec["audio"][0], 768]}          # a wav2vec2 cache for a mel model
    _write_manifest(tmp_path / "bad", wide_audio)
    with pytest.raises(ValueError, match=r"holds audio of shape \(\d+, 768\).*wav2vec2:ckpt"):
        pipeline.check_cache(str(tmp_path / "bad"), None, expected)
    with pytest.raises(ValueError, match="no bucket '9x32x32'"):
        pipeline.check_cache(str(tmp_path / "ok"), "9x32x32", expected)
    # a cache of schema 1 (pose heatmaps) is refused by name, before any shape is compared
    _write_manifest(tmp_path / "v1", {**spec, "pose": [17, 16, 16, 13]}, version=1)
    with pytest.raises(ValueError, match=r"schema 1, this version reads schema 2; run `omnijax preprocess`"):
        pipeline.check_cache(str(tmp_path / "v1"), None, expected)
    # the objective's shards input runs the check before it builds the pipeline
    c.data.update(source="shards", path=str(tmp_path / "bad"))
    with pytest.raises(ValueError, match=r"holds audio of shape"):
        obj.make_data(c, _one_device_mesh())


def test_pose_ignore_names_keypoints_the_guider_never_sees():
    """The config names the keypoints (default: mouth and chin, which the audio drives); the
    model config gets their channels, and an unknown name is an error that lists the names."""
    obj = objectives.build(_mmdit_cfg())
    assert obj.model_config.pose_ignore == (10, 11, 12)
    c = _mmdit_cfg()
    c.model.pose_ignore = ()
    assert objectives.build(c).model_config.pose_ignore == ()
    c.model.pose_ignore = ("mouth", "chin")
    with pytest.raises(ValueError, match=r"unknown keypoints \['mouth'\]; they are \['nose'"):
        objectives.build(c)
