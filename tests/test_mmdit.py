"""MMDiT: shapes for every condition mix, absent == dropped, audio locality, clean motion
frames (context only, a mask not a shape), pose/text sensitivity, scanned == unrolled,
bf16 ~ f32, adaLN-zero init, and a one-batch overfit."""

import dataclasses
import itertools

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from omnijax.diffusion import flow
from omnijax.models.mmdit import MMDiT, MMDiTConfig, random_mmdit

B, F, H, W, C = 2, 5, 4, 4, 16
T = 1 + 4 * (F - 1)
CFG = MMDiTConfig.tiny()
STEPS, LR = 60, 3e-3  # one-batch overfit (falls >100x by step 50 here)


def _inputs(seed=0, b=B, f=F, motion=2, text_len=6):
    """Random condition inputs as NumPy arrays (eager jax.random would compile per shape);
    sample 0 has `motion` clean prefix frames, sample 1 none."""
    rng = np.random.default_rng(seed)
    t = 1 + 4 * (f - 1)
    normal = lambda *shape: rng.normal(size=shape).astype(np.float32)  # noqa: E731
    clean = np.zeros((b, f), bool)
    clean[0, :motion] = True
    return dict(
        x=normal(b, f, H, W, C),
        t=np.linspace(0.2, 0.8, b).astype(np.float32),
        clean=clean,
        ref=normal(b, 1, H, W, C),
        audio=normal(b, t, CFG.audio_dim),
        pose=rng.uniform(size=(b, t, 4 * H, 4 * W, CFG.pose_channels)).astype(np.float32),
        text=normal(b, text_len, CFG.text_dim),
        text_mask=np.arange(text_len)[None].repeat(b, 0) < np.array([[text_len], [3]])[:b],
    )


def _max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def _forward(model, inputs, keep):
    """Jitted forward; keep always carries all four conditions so calls share one compile."""
    b = inputs["x"].shape[0]
    keep = {c: np.asarray(keep.get(c, np.ones(b, bool))) for c in ("ref", "audio", "pose", "text")}
    return _forward_jit(model, inputs, keep)


@nnx.jit
def _forward_jit(model, inputs, keep):
    inputs = dict(inputs)
    return model(inputs.pop("x"), inputs.pop("t"), keep=keep, **inputs)


@pytest.fixture(scope="module")
def model():
    return random_mmdit(CFG, seed=0)


def test_shapes_for_every_condition_combination(model):
    full = _inputs()
    names = ["ref", "clean", "audio", "pose", "text"]
    for present in itertools.product([False, True], repeat=len(names)):
        kw = {n: full[n] for n, p in zip(names, present) if p}
        if "text" in kw:
            kw["text_mask"] = full["text_mask"]
        keep = {"ref": np.array([True, False]), "audio": np.array([False, True])}
        out = nnx.eval_shape(lambda m: m(full["x"], full["t"], keep=keep, **kw), model)
        assert out.shape == (B, F, H, W, C) and out.dtype == jnp.float32, present


def test_dropped_condition_equals_absent_condition(model):
    """keep[c] = False for a sample gives exactly what that sample gets with c = None."""
    full = _inputs(seed=1)
    for cond in ("ref", "audio", "pose", "text"):
        keep = {cond: np.array([True, False])}
        dropped = _forward(model, full, keep)
        absent_inp = {k: v for k, v in full.items() if k != cond and not (cond == "text" and k == "text_mask")}
        absent = _forward(model, absent_inp, {})
        np.testing.assert_allclose(dropped[1], absent[1], atol=2e-5, err_msg=cond)
        # and the condition did matter for the kept sample
        assert _max_diff(dropped[0], absent[0]) > 1e-3, cond


def test_pose_and_text_change_the_output_padding_does_not(model):
    full = _inputs(seed=2)
    base = _forward(model, full, {})
    moved_pose = dict(full, pose=np.roll(full["pose"], 3, axis=3))
    assert _max_diff(_forward(model, moved_pose, {}), base) > 1e-3
    other_text = dict(full, text=full["text"] * -1.0)
    assert _max_diff(_forward(model, other_text, {}), base) > 1e-3
    # sample 1's text is padded after 3 tokens: values there are invisible
    text = full["text"].copy()
    text[1, 3:] = 7.0
    padded = dict(full, text=text)
    np.testing.assert_allclose(_forward(model, padded, {}), base, atol=1e-6)


def _one_layer(**kw):
    return random_mmdit(MMDiTConfig.tiny(depth=1, **kw), seed=3)


def test_audio_locality(window=1):
    """Latent frame f sees only the audio of video frames inside its window."""
    f = 5
    model = _one_layer(audio_window=window)
    inp = _inputs(seed=4, f=f, motion=0)
    base = _forward(model, inp, {})
    # video frames of latent frame g: {0} for g = 0, {4g-3 .. 4g} otherwise
    frames_of = lambda g: [0] if g == 0 else list(range(4 * g - 3, 4 * g + 1))  # noqa: E731
    target = 2
    window_frames = sorted(sum((frames_of(g) for g in range(target - window, target + window + 1)
                                if 0 <= g < f), []))
    outside = [i for i in range(1 + 4 * (f - 1)) if i not in window_frames]
    changed = inp["audio"].copy()
    changed[:, outside] += 5.0
    out = np.asarray(_forward(model, dict(inp, audio=changed), {}))
    base = np.asarray(base)
    np.testing.assert_allclose(out[:, target], base[:, target], atol=1e-6)
    assert _max_diff(out, base) > 1e-3  # the change does reach other frames
    inside = inp["audio"].copy()
    inside[:, window_frames] += 5.0
    assert _max_diff(np.asarray(_forward(model, dict(inp, audio=inside), {}))[:, target], base[:, target]) > 1e-3


def test_clean_frames_are_context_without_audio_or_pose(model):
    """Clean motion frames feed the noisy ones through attention, but take no audio or pose:
    audio and pose of video frames that only clean frames' windows cover change nothing."""
    inp = _inputs(seed=9, motion=2)
    inp["clean"][:] = [True, True, False, False, False]           # both samples: 2 clean frames
    base = np.asarray(_forward(model, inp, {}))
    # video frame 0 is latent frame 0's; with audio_window=1 only latent frames 0 and 1 (both
    # clean) see it; pose is per latent frame: video frames 0..4 belong to latents 0 and 1
    audio = inp["audio"].copy()
    audio[:, 0] += 5.0
    np.testing.assert_allclose(_forward(model, dict(inp, audio=audio), {}), base, atol=1e-6)
    pose = inp["pose"].copy()
    pose[:, :5] = np.random.default_rng(0).uniform(size=pose[:, :5].shape)
    np.testing.assert_allclose(_forward(model, dict(inp, pose=pose), {}), base, atol=1e-6)
    # the same changes do matter when those frames are noisy
    noisy = dict(inp, clean=np.zeros_like(inp["clean"]))
    assert _max_diff(_forward(model, dict(noisy, audio=audio), {}), _forward(model, noisy, {})) > 1e-3
    # and the clean frames' content reaches the noisy frames
    x = inp["x"].copy()
    x[:, :2] *= -1.0
    assert _max_diff(np.asarray(_forward(model, dict(inp, x=x), {}))[:, 2:], base[:, 2:]) > 1e-3


def test_prefix_is_data_one_compile_and_per_sample(model):
    """Any mix of prefix lengths in a batch runs one compiled program, and a sample's output
    does not depend on the other samples' prefixes."""
    inp = _inputs(seed=10)
    before = _forward_jit._cache_size() if hasattr(_forward_jit, "_cache_size") else None
    outs = []
    for prefix in ([0, 0], [2, 0], [2, 2], [1, 2]):
        clean = np.arange(F)[None] < np.asarray(prefix)[:, None]
        outs.append(np.asarray(_forward(model, dict(inp, clean=clean), {})))
    if before is not None:
        assert _forward_jit._cache_size() - before <= 1
    np.testing.assert_allclose(outs[1][1], outs[0][1], atol=1e-6)   # sample 1 keeps prefix 0
    np.testing.assert_allclose(outs[2][0], outs[1][0], atol=1e-6)   # sample 0 keeps prefix 2
    assert _max_diff(outs[1][0], outs[0][0]) > 1e-3                  # the prefix matters


def test_scanned_equals_unrolled(model):
    inp = _inputs(seed=5)
    scanned = _forward(model, inp, {})
    _, state = nnx.split(model)
    abstract = nnx.eval_shape(lambda: MMDiT(dataclasses.replace(CFG, scan_layers=False), rngs=nnx.Rngs(0)))
    unrolled_model = nnx.merge(nnx.split(abstract)[0], state)
    assert not unrolled_model.config.scan_layers
    np.testing.assert_allclose(_forward(unrolled_model, inp, {}), scanned, atol=1e-5, rtol=1e-5)


def test_bf16_forward_close_to_float32(model):
    inp = _inputs(seed=6)
    want = _forward(model, inp, {})
    # the compute dtype lives in each layer: the graph of a bf16 model, the same f32 params
    _, state = nnx.split(model)
    abstract = nnx.eval_shape(lambda: MMDiT(dataclasses.replace(CFG, dtype="bfloat16"), rngs=nnx.Rngs(0)))
    bf16 = nnx.merge(nnx.split(abstract)[0], state)
    got = _forward(bf16, inp, {})
    assert got.dtype == jnp.float32
    got, want = np.asarray(got), np.asarray(want)
    rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    assert rel < 0.05, rel
    # it really ran in bf16: float32 reassociation alone stays near 1e-7, bf16 rounding of
    # every matmul input is ~4e-3 per op
    assert rel > 1e-4, rel


def test_bad_inputs_say_what_was_expected(model):
    inp = _inputs()
    with pytest.raises(ValueError, match=r"x must be \(B, F, h, w, 16\)"):
        model(inp["x"][..., :8], inp["t"])
    with pytest.raises(ValueError, match="audio must be"):
        model(inp["x"], inp["t"], audio=inp["audio"][:, :-1])
    with pytest.raises(ValueError, match="pose must be"):
        model(inp["x"], inp["t"], pose=inp["pose"][:, :, :8])
    with pytest.raises(ValueError, match="unknown condition"):
        model(inp["x"], inp["t"], keep={"video": np.ones(B, bool)})
    with pytest.raises(ValueError, match="ref must hold exactly one"):
        model(inp["x"], inp["t"], ref=inp["x"][:, :2])
    with pytest.raises(ValueError, match=r"clean must be \(B, F\)"):
        model(inp["x"], inp["t"], clean=inp["clean"][:, :3])
    with pytest.raises(ValueError, match="not divisible by heads"):
        MMDiTConfig.tiny(heads=3)


def test_tiny_model_overfits_one_batch():
    """Flow-matching loss on one fixed batch (fixed noise and t: a fixed regression target)
    falls at least 10x. All conditions present, remat on, so the whole graph gets gradients.
    Starts from the real init: adaLN-zero makes the first prediction exactly zero."""
    cfg = MMDiTConfig.tiny(depth=1, width=64, heads=2, ffn=128, remat="dots_saveable")
    model = MMDiT(cfg, rngs=nnx.Rngs(0))
    inp = _inputs(seed=7, f=2, motion=1)
    inp.pop("clean")
    x0 = inp.pop("x")
    eps = np.random.default_rng(8).normal(size=x0.shape).astype(np.float32)
    t = np.array([0.3, 0.7], np.float32)
    x_t, target = flow.interpolate(x0, eps, t), flow.velocity_target(x0, eps)
    inp.pop("t")
    optimizer = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer):
        def loss_fn(model):
            v = model(x_t, t, **inp)
            return flow.per_sample_loss(v, target).mean()
        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(STEPS)]
    np.testing.assert_allclose(losses[0], float(np.mean(np.square(np.asarray(target)))), rtol=1e-5)
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
