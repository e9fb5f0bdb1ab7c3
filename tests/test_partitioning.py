"""Logical-axis rules -> PartitionSpecs / NamedShardings, on the 8 fake CPU devices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from omnijax.models import partitioning as part
from omnijax.models.mmdit import MMDiT, MMDiTConfig, random_mmdit


@pytest.fixture
def mesh():
    return part.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


@pytest.fixture(scope="module")
def model():
    # one layer keeps the sharded compile short; the stacked-layer axis is still there
    return random_mmdit(MMDiTConfig.tiny(depth=1), seed=1)


def test_make_mesh_fills_and_validates():
    m = part.make_mesh({"data": -1, "tensor": 2})
    assert dict(zip(m.axis_names, m.axis_sizes)) == {"data": 4, "fsdp": 1, "context": 1, "tensor": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in m.axis_types)
    with pytest.raises(ValueError, match="needs 16 devices"):
        part.make_mesh({"data": 4, "tensor": 4})
    with pytest.raises(ValueError, match="unknown mesh axes"):
        part.make_mesh({"model": 2})


def test_spec_for_rules_dedup_and_divisibility(mesh):
    assert part.spec_for(("embed", "mlp")) == P("fsdp", "tensor")
    # batch takes (data, fsdp); a later embed may not reuse fsdp
    assert part.spec_for(("batch", "length", "embed"), mesh=mesh) == P(("data", "fsdp"), None, None)
    # mesh axes of size 1 (context) are dropped
    assert part.spec_for(("batch", "length"), mesh=mesh) == P(("data", "fsdp"), None)
    # 6 is not divisible by data*fsdp = 4: keep only what divides
    assert part.spec_for(("batch", "mlp"), mesh=mesh, shape=(6, 8)) == P("data", "tensor")
    assert part.spec_for(("batch", "mlp"), mesh=mesh, shape=(3, 5)) == P(None, None)
    with pytest.raises(KeyError, match="no rule"):
        part.spec_for(("nonsense",))


def test_rules_context_restores():
    before = part.get_rules()
    with part.axis_rules({**before, "mlp": None}):
        assert part.spec_for(("embed", "mlp")) == P("fsdp", None)
    assert part.get_rules() == before


def test_constrain_is_noop_without_mesh_and_shards_with_one(mesh):
    x = jnp.arange(32.0).reshape(8, 4)
    assert part.constrain(x, ("batch", "mlp")) is x

    @jax.jit
    def f(a):
        return part.constrain(a * 2, ("batch", "mlp"))

    with jax.set_mesh(mesh):
        y = f(x)
    assert y.sharding.spec == P(("data", "fsdp"), "tensor")
    np.testing.assert_array_equal(y, x * 2)


def test_logical_to_sharding_from_param_metadata(mesh, model):
    cfg = MMDiTConfig.tiny()
    abstract = nnx.eval_shape(lambda: MMDiT(cfg, rngs=nnx.Rngs(0)))
    state = nnx.state(abstract, nnx.Param)
    shardings = part.logical_to_sharding(state, mesh)
    # every parameter has names, stacked layers lead with the layers axis
    for path, var in nnx.to_flat_state(state):
        assert part.logical_axes_of(var) is not None, path
    q = abstract.blocks.visual.q.kernel
    assert part.logical_axes_of(q) == ("layers", "embed", "heads")
    assert shardings["blocks"]["visual"]["q"]["kernel"].get_value().spec == P(None, "fsdp", "tensor")
    assert shardings["blocks"]["visual"]["mlp_out"]["kernel"].get_value().spec == P(None, "tensor", "fsdp")
    # trees line up: device_put a real state with them
    real = nnx.state(model, nnx.Param)
    placed = jax.device_put(real, shardings)
    k = placed["blocks"]["visual"]["mlp_in"]["kernel"].get_value()
    assert k.sharding.spec == P(None, "fsdp", "tensor")
    assert len(k.addressable_shards) == 8


def test_sharded_forward_equals_single_device(mesh, model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    x = np.random.default_rng(2).normal(size=(4, 2, 4, 4, 16)).astype(np.float32)
    t = np.linspace(0.1, 0.9, 4).astype(np.float32)

    def fwd(params, x, t):
        return nnx.merge(graphdef, params, rest)(x, t)

    want = jax.jit(fwd)(params, x, t)
    shardings = part.logical_to_sharding(params, mesh)
    with jax.set_mesh(mesh):
        sp = jax.device_put(params, shardings)
        sx = jax.device_put(x, jax.NamedSharding(mesh, P(("data", "fsdp"))))
        got = jax.jit(fwd)(sp, sx, t)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


COLLECTIVES = ("all-gather", "all-reduce", "all-to-all", "collective-permute", "reduce-scatter")


def _compiled_hlo(fn, *args) -> str:
    return jax.jit(fn).lower(*args).compile().as_text()


def test_attention_projection_needs_no_collective_under_tensor_parallelism():
    """q, k and v are separate projections, each split on `heads`: under tensor=2 the
    projection + head split + QK-norm compiles without one collective. The old fused layout
    (one (embed, 3 x heads) kernel split into q, k, v afterwards) straddles the shards and
    does need data movement, which this check also sees."""
    from omnijax.models.mmdit import StreamWeights
    cfg = MMDiTConfig.tiny(width=64, heads=4)
    mesh = part.make_mesh({"data": 1, "fsdp": 1, "tensor": 2}, jax.devices()[:2])
    block = StreamWeights(cfg, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(block)
    x = np.random.default_rng(0).normal(size=(2, 12, 64)).astype(np.float32)
    shardings = part.logical_to_sharding(params, mesh)

    def project(params, x):
        return nnx.merge(graphdef, params).qkv_heads(x, cfg.heads)

    with jax.set_mesh(mesh):
        sp = jax.device_put(params, shardings)
        sx = jax.device_put(x, jax.NamedSharding(mesh, P()))
        hlo = _compiled_hlo(project, sp, sx)
        q, k, v = jax.jit(project)(sp, sx)
    assert q.sharding.spec[2] == "tensor"                       # heads stay split
    assert not [c for c in COLLECTIVES if c in hlo], [c for c in COLLECTIVES if c in hlo]
    want = project(params, x)
    np.testing.assert_allclose(np.asarray(q), np.asarray(want[0]), rtol=1e-5, atol=1e-5)

    fused = jax.device_put(np.random.default_rng(1).normal(size=(64, 3 * 64)).astype(np.float32),
                           jax.NamedSharding(mesh, P(None, "tensor")))

    def fused_split(w, x):
        qf, kf, vf = jnp.split(x @ w, 3, axis=-1)
        heads = lambda a: jax.lax.with_sharding_constraint(  # noqa: E731
            a.reshape(2, 12, 4, 16), jax.NamedSharding(mesh, P(None, None, "tensor", None)))
        return heads(qf), heads(kf), heads(vf)

    with jax.set_mesh(mesh):
        hlo_fused = _compiled_hlo(fused_split, fused, sx)
    assert [c for c in COLLECTIVES if c in hlo_fused]
