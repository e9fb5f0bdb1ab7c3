"""Train state: optimizer (AdamW + warmup/cosine + clipping), decay mask, shardings."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import train_toy
from omnijax.models import partitioning
from omnijax.train import mesh as mesh_lib
from omnijax.train import state as state_lib


def _optim(**kw):
    return ml_collections.ConfigDict(dict(dict(lr=1.0, warmup_steps=10, decay_steps=110,
                                               final_lr_ratio=0.1, b1=0.9, b2=0.99, eps=1e-8,
                                               weight_decay=0.5, clip_norm=1.0), **kw))


def test_schedule_warmup_then_cosine():
    sched = state_lib.learning_rate_schedule(_optim())
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(0.5)
    assert float(sched(10)) == pytest.approx(1.0)
    assert float(sched(60)) == pytest.approx(0.1 + 0.9 * 0.5, rel=1e-5)   # cosine midpoint
    assert float(sched(110)) == pytest.approx(0.1)


def test_schedule_wsd_holds_then_cools_down_linearly():
    sched = state_lib.learning_rate_schedule(_optim(schedule="wsd", cooldown_steps=20))
    assert float(sched(5)) == pytest.approx(0.5)                        # the same warmup
    for step in (10, 50, 90):
        assert float(sched(step)) == pytest.approx(1.0)                 # stable
    assert float(sched(100)) == pytest.approx(0.55, rel=1e-5)           # linear midpoint
    assert float(sched(110)) == pytest.approx(0.1)
    assert float(sched(500)) == pytest.approx(0.1)
    # resumed for a cooldown from step 60: the steps before it saw the same rate
    cooled = state_lib.learning_rate_schedule(_optim(schedule="wsd", decay_steps=80, cooldown_steps=20))
    assert [float(cooled(s)) for s in range(61)] == [float(sched(s)) for s in range(61)]
    assert float(cooled(70)) == pytest.approx(0.55, rel=1e-5)


def test_schedule_rejects_unknown_kind_and_long_cooldown():
    with pytest.raises(ValueError, match="optim.schedule='linear'"):
        state_lib.learning_rate_schedule(_optim(schedule="linear"))
    with pytest.raises(ValueError, match="optim.cooldown_steps=101"):
        state_lib.learning_rate_schedule(_optim(schedule="wsd", cooldown_steps=101))


def test_clipping_and_decay_mask():
    tx, _ = state_lib.make_optimizer(_optim(warmup_steps=0, decay_steps=10, weight_decay=0.0))
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}}
    st = tx.init(params)
    huge = {"dense": {"kernel": jnp.full((2, 2), 1e6), "bias": jnp.zeros((2,))}}
    upd, _ = tx.update(huge, st, params)
    # after clipping the first Adam step is lr * g/|g| elementwise ~ -1 per entry regardless of scale
    np.testing.assert_allclose(upd["dense"]["kernel"], -1.0, rtol=1e-4)
    # weight decay hits kernels only, judged by name: a stacked (2-D) bias is still a bias
    params = {"dense": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((3, 2))}}
    tx, _ = state_lib.make_optimizer(_optim(warmup_steps=0, decay_steps=10, weight_decay=0.5))
    zero = jax.tree.map(jnp.zeros_like, params)
    upd, _ = tx.update(zero, tx.init(params), params)
    assert float(jnp.abs(upd["dense"]["kernel"]).max()) > 0
    assert float(jnp.abs(upd["dense"]["bias"]).max()) == 0


def _flat_mask(model_fn):
    _, params, _ = state_lib.build_abstract(model_fn, nnx.Param)
    mask = state_lib.decay_mask(params)
    return {"/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)): bool(v)
            for path, v in jax.tree_util.tree_flatten_with_path(mask)[0]}


@pytest.mark.parametrize("scan_layers", [True, False])
def test_decay_mask_by_role_on_the_real_mmdit(scan_layers):
    """Kernels decay; biases, norm scales, adaLN modulation tables, null and slot embeddings
    do not, whether the blocks are stacked (a leading `layers` axis) or unrolled."""
    from omnijax.models.mmdit import MMDiT, MMDiTConfig
    flat = _flat_mask(lambda r: MMDiT(MMDiTConfig.tiny(scan_layers=scan_layers), rngs=r))
    assert flat["blocks/visual/q/kernel"] and flat["patch_embed/kernel"] and flat["pose/out/kernel"]
    for name in ("blocks/visual/q/bias", "blocks/visual/q_norm/scale", "blocks/visual/modulation",
                 "blocks/audio/norm/scale", "final_modulation", "text/null", "audio/null",
                 "audio/slot_embed"):
        assert not flat[name], name
    decayed = {k for k, v in flat.items() if v}
    assert decayed == {k for k in flat if k.endswith("/kernel")}


def test_decay_mask_by_role_on_the_vae():
    from omnijax.models.vae import CausalVAE, VAEConfig
    flat = _flat_mask(lambda r: CausalVAE(VAEConfig.tiny(), rngs=r))
    kernels = {k for k in flat if k.endswith("/kernel")}
    assert kernels and all(flat[k] for k in kernels)
    assert not any(v for k, v in flat.items() if k not in kernels), \
        [k for k, v in flat.items() if v and k not in kernels]


def test_weight_decay_leaves_scanned_biases_and_tables_unchanged():
    """Two real AdamW updates with zero gradients on the scanned tiny MMDiT: only kernels
    move (by lr * wd * w); a bias, a norm scale, a modulation table stay bit-identical."""
    from omnijax.models.mmdit import MMDiTConfig, random_mmdit
    model = random_mmdit(MMDiTConfig.tiny(), seed=0)
    _, params = nnx.split(model, nnx.Param)
    tx, _ = state_lib.make_optimizer(_optim(warmup_steps=1, decay_steps=10, weight_decay=0.1))
    st = tx.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    new = params
    for _ in range(2):
        upd, st = tx.update(zero, st, new)
        new = jax.tree.map(lambda p, u: p + u, new, upd)
    get = lambda tree, *path: np.asarray(_at(tree, path))  # noqa: E731
    for path in (("blocks", "visual", "q", "bias"), ("blocks", "visual", "q_norm", "scale"),
                 ("blocks", "visual", "modulation"), ("final_modulation",), ("text", "null")):
        np.testing.assert_array_equal(get(new, *path), get(params, *path), err_msg=str(path))
    k0, k1 = get(params, "blocks", "visual", "q", "kernel"), get(new, "blocks", "visual", "q", "kernel")
    assert np.abs(k1 - k0).max() > 1e-3
    lr = float(state_lib.learning_rate_schedule(_optim(warmup_steps=1, decay_steps=10))(1))
    np.testing.assert_allclose(k1, k0 * (1 - lr * 0.1), rtol=1e-5)   # update 1 had lr 0 (warmup)


def test_state_shardings_mirror_params_and_rng_is_raw():
    cfg = train_toy.toy_config()
    obj = train_toy.ToyObjective(cfg)
    tx, _ = state_lib.make_optimizer(cfg.optim)
    abstract = state_lib.abstract_state(obj.model_fn, nnx.Param, tx, 0)
    assert abstract.rng.dtype == jnp.uint32 and abstract.rng.shape == (2,)
    mesh = partitioning.make_mesh({"fsdp": 4, "tensor": 2})
    sh = state_lib.state_shardings(abstract, mesh, mesh_lib.rules_from_config(None))
    specs = {s.spec for s in jax.tree.leaves(sh.opt_state)}
    assert jax.sharding.PartitionSpec("fsdp", "tensor") in specs     # Adam moments of `up`
    assert sh.ema["up"]["kernel"].get_raw_value().spec == sh.params["up"]["kernel"].get_raw_value().spec
    assert state_lib.count_params(abstract.params) == 16 * 32 + 32 + 32 * 8 + 8
    state = state_lib.create_state(obj.model_fn, nnx.Param, tx, sh, 0)
    assert state.params["up"]["kernel"][...].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")


def _at(tree, path):
    node = tree
    for key in path:
        node = node[key]
    return node[...] if hasattr(node, "get_value") else node
