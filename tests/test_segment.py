"""The segment program: guidance branches, batched CFG == separate forwards, clean frames
pinned, one compile for every prefix / condition mix, sharded == single device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from omnijax.diffusion import flow
from omnijax.models.mmdit import MMDiTConfig, random_mmdit
from omnijax.sample import segment as seg

CFG = MMDiTConfig.tiny(depth=1)
B, F, H, W, L = 2, 5, 4, 4, 6


def _inputs(seed=0, prefix=(0, 2)):
    spec = seg.input_spec(CFG, B, F, H, W, L)
    rng = np.random.default_rng(seed)
    out = {}
    for k, s in spec.items():
        if s.dtype == jnp.bool_:
            out[k] = np.ones(s.shape, bool)
        else:
            out[k] = rng.normal(size=s.shape).astype(np.float32)
    out["pose"] = np.abs(out["pose"])
    out["clean"] = np.arange(F)[None] < np.asarray(prefix)[:, None]
    out["text_mask"][1, 3:] = False
    return out


@pytest.fixture(scope="module")
def model():
    return random_mmdit(CFG, seed=0)


def test_branches_drop_when_their_coefficient_is_zero_at_every_step():
    kept = lambda **kw: [c for c, _ in seg.branch_coefficients(seg.SegmentSpec(**kw))]  # noqa: E731
    assert kept(cfg_text=(5, 5), cfg_audio=(3, 3)) == [(), ("text",), ("text", "audio")]
    assert kept(cfg_text=(1, 1), cfg_audio=(3, 3)) == [("text",), ("text", "audio")]
    assert kept(cfg_text=(3, 3), cfg_audio=(3, 3)) == [(), ("text", "audio")]
    assert kept(cfg_text=(1, 1), cfg_audio=(1, 1)) == [("text", "audio")]
    # annealed to 1 at the end only: every coefficient is non-zero at the start
    assert kept(cfg_text=(5, 1), cfg_audio=(1, 1)) == [(), ("text",), ("text", "audio")]
    assert kept(cfg_audio=(4, 4), use_text=False) == [(), ("audio",)]
    assert kept(use_text=False, use_audio=False) == [()]
    with pytest.raises(ValueError, match="solver"):
        seg.SegmentSpec(solver="ddim")


@pytest.mark.parametrize("cfg_text,cfg_audio", [((4.0, 2.0), (6.0, 3.0)), ((1.0, 1.0), (5.0, 5.0))])
def test_batched_guidance_equals_separate_forwards(model, cfg_text, cfg_audio):
    """One forward of B x branches samples == the three separate calls combined by
    flow.combine_guidance with the annealed scales of that step."""
    spec = seg.SegmentSpec(solver="euler", steps=10, cfg_text=cfg_text, cfg_audio=cfg_audio)
    inp = _inputs(1)
    x = np.random.default_rng(2).normal(size=inp["noise"].shape).astype(np.float32)
    graphdef, params = nnx.split(model)
    step = 3

    @jax.jit
    def batched(params, inp, x):
        return seg.velocity(nnx.merge(graphdef, params), spec, inp, x, jnp.float32(0.6), jnp.int32(step))

    @jax.jit
    def one(params, inp, x, text, audio):
        m = nnx.merge(graphdef, params)
        ctx = jnp.where(inp["clean"][:, :, None, None, None], inp["context"], x)
        keep = {"ref": inp["has_ref"], "pose": inp["has_pose"], "text": text, "audio": audio}
        return m(ctx, jnp.full((B,), 0.6), clean=inp["clean"], ref=inp["ref"], audio=inp["audio"],
                 pose=inp["pose"], text=inp["text"], text_mask=inp["text_mask"], keep=keep)

    on, off = np.ones(B, bool), np.zeros(B, bool)
    vs = [one(params, inp, x, off, off), one(params, inp, x, on, off), one(params, inp, x, on, on)]
    scales = [flow.guidance_scale(*cfg_text, step, 10), flow.guidance_scale(*cfg_audio, step, 10)]
    want = np.array(flow.combine_guidance(vs, scales))
    want[np.asarray(inp["clean"])] = 0.0                         # clean frames get no velocity
    got = np.asarray(batched(params, inp, x))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    assert np.abs(want).max() > 0.1


def test_clean_frames_are_pinned_and_prefix_and_conditions_are_data(model):
    """Different prefixes and condition mixes run one compiled program; clean frames come
    out exactly as their context; a sample does not depend on its batch neighbours."""
    fn = seg.SegmentFunction(model, seg.SegmentSpec(solver="unipc", steps=3, cfg_text=(3, 3),
                                                    cfg_audio=(2, 2)))
    a = _inputs(3, prefix=(0, 2))
    out_a = np.asarray(fn(a))
    np.testing.assert_array_equal(out_a[1, :2], a["context"][1, :2])
    assert np.abs(out_a[0, :2] - a["context"][0, :2]).max() > 1e-3   # sample 0 has no prefix
    b = dict(a, clean=np.arange(F)[None] < np.array([[2], [2]]), has_audio=np.array([True, False]),
             has_text=np.array([False, True]), has_ref=np.array([True, False]))
    out_b = np.asarray(fn(b))
    np.testing.assert_array_equal(out_b[:, :2], b["context"][:, :2])
    assert fn.compiles == 1
    # sample 1 changed only its own flags between a and b ... sample 0 only its prefix
    c = dict(b, clean=a["clean"], has_audio=np.array([True, False]), has_text=np.array([True, True]),
             has_ref=np.array([True, True]))
    out_c = np.asarray(fn(c))
    np.testing.assert_allclose(out_c[0], out_a[0], rtol=1e-5, atol=1e-5)
    assert fn.compiles == 1


def test_sharded_segment_equals_single_device(model):
    from omnijax.models import partitioning as part
    spec = seg.SegmentSpec(solver="euler", steps=2, cfg_text=(2, 2), cfg_audio=(2, 2))
    inp = _inputs(4)
    want = np.asarray(seg.SegmentFunction(model, spec)(inp))
    mesh = part.make_mesh({"data": 1, "fsdp": 2, "tensor": 2}, jax.devices()[:4])
    fn = seg.SegmentFunction(model, spec, mesh=mesh)
    got = fn(inp)
    assert len(got.sharding.device_set) == 4
    q = fn.params["blocks"]["visual"]["q"]["kernel"][...]
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5, atol=2e-5)
