"""LoRA: adapters only in the optimizer, base frozen, merge == unmerged output."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import train_toy
from omnijax.models import lora
from omnijax.models.mmdit import MMDiT, MMDiTConfig
from omnijax.train import trainer


def _randomise_b(model, seed=0):
    """B starts at zero (adapter = identity); give it values so merging has work to do."""
    keys = iter(jax.random.split(jax.random.key(seed), 64))
    for _, m in nnx.iter_modules(model):
        if isinstance(m, lora.LoRALinear):
            m.lora_b.set_value(0.1 * jax.random.normal(next(keys), m.lora_b.get_value().shape))


def _inputs(cfg: MMDiTConfig):
    r = np.random.default_rng(0)
    b, f, h, w = 1, 2, 4, 4
    T = 1 + 4 * (f - 1)
    return (jnp.asarray(r.standard_normal((b, f, h, w, cfg.latent_channels)), jnp.float32),
            jnp.asarray([0.3], jnp.float32),
            dict(ref=jnp.asarray(r.standard_normal((b, 1, h, w, cfg.latent_channels)), jnp.float32),
                 audio=jnp.asarray(r.standard_normal((b, T, cfg.audio_dim)), jnp.float32),
                 text=jnp.asarray(r.standard_normal((b, 8, cfg.text_dim)), jnp.float32)))


@nnx.jit
def fwd(model, x, t, kw):
    return model(x, t, **kw)


class Stacked(nnx.Module):
    """Layers made by nnx.vmap and run by nnx.scan, like the MMDiT's blocks."""

    def __init__(self, rngs, depth=3, d=8):
        from omnijax.models.partitioning import param_init

        @nnx.split_rngs(splits=depth)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make(rngs):
            return nnx.Linear(d, d, kernel_init=param_init(nnx.initializers.lecun_normal(), "embed", "mlp"),
                              rngs=rngs)
        self.blocks = make(rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(0, nnx.Carry), out_axes=nnx.Carry)
        def body(layer, h):
            return jnp.tanh(layer(h))
        return body(self.blocks, x)


def test_stacked_layers_get_stacked_adapters_and_merge_exactly():
    model = Stacked(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 8))
    y0 = model(x)
    lora.apply_lora(model, rank=2, alpha=4, targets=["blocks$"], rngs=nnx.Rngs(2))
    assert model.blocks.lora_a.get_value().shape == (3, 8, 2)
    assert model.blocks.lora_b.get_value().shape == (3, 2, 8)
    assert model.blocks.lora_a.get_metadata()["out_sharding"] == ("layers", "embed", None)
    assert model.blocks.lora_b.get_metadata()["out_sharding"] == ("layers", None, "mlp")
    np.testing.assert_allclose(model(x), y0, rtol=1e-6)                 # B = 0: identity
    _randomise_b(model)
    y1 = model(x)
    # the adapter's effect, computed by hand layer by layer
    h = x
    for i in range(3):
        k = model.blocks.base.kernel.get_value()[i]
        a, b = model.blocks.lora_a.get_value()[i], model.blocks.lora_b.get_value()[i]
        h = jnp.tanh(h @ k + model.blocks.base.bias.get_value()[i] + (h @ a @ b) * 2.0)
    np.testing.assert_allclose(y1, h, rtol=1e-5, atol=1e-6)
    merged = lora.merge_lora(model)
    assert isinstance(merged.blocks, nnx.Linear)
    np.testing.assert_allclose(merged(x), y1, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_mmdit_lora_identity_at_init_and_merge_equals_unmerged():
    cfg = MMDiTConfig.tiny(depth=1)
    x, t, kw = _inputs(cfg)
    base = MMDiT(cfg, rngs=nnx.Rngs(0))
    # a non-trivial base (adaLN-zero and zero-init outputs would hide everything)
    for path, v in nnx.iter_graph(base):
        if isinstance(v, nnx.Param) and v.get_value().ndim >= 2 and not np.any(v.get_value()):
            v.set_value(0.05 * jax.random.normal(jax.random.key(len(path)), v.get_value().shape))
    y_base = fwd(base, x, t, kw)

    adapted = lora.apply_lora(base, rank=4, alpha=8, targets=[r"blocks/(visual|text)/(q|out)$"],
                              rngs=nnx.Rngs(1))
    wrapped = sorted("/".join(map(str, p)) for p, m in nnx.iter_modules(adapted)
                     if isinstance(m, lora.LoRALinear))
    assert wrapped == [f"blocks/{s}/{n}" for s in ("text", "visual") for n in ("out", "q")]
    np.testing.assert_allclose(fwd(adapted, x, t, kw), y_base, rtol=1e-5, atol=1e-6)  # B = 0

    _randomise_b(adapted)
    y_adapted = fwd(adapted, x, t, kw)
    assert np.abs(np.asarray(y_adapted - y_base)).max() > 1e-3
    merged = lora.merge_lora(adapted)
    assert not list(nnx.state(merged, lora.LoRAParam).flat_state())
    assert all(not isinstance(m, lora.LoRALinear) for _, m in nnx.iter_modules(merged))
    np.testing.assert_allclose(fwd(merged, x, t, kw), y_adapted, rtol=1e-4, atol=1e-5)


def test_lora_bad_targets_name_what_exists():
    with pytest.raises(ValueError, match="match no nnx.Linear.*up"):
        lora.apply_lora(train_toy.ToyNet(nnx.Rngs(0)), rank=2, alpha=2, targets=["nope"],
                        rngs=nnx.Rngs(0))


def test_training_updates_only_adapters():
    cfg = train_toy.toy_config()
    cfg.lora.rank = 2
    su = trainer.setup(cfg)
    # the optimizer sees only LoRAParams; the base kernels are in `frozen`
    assert {type(v) for v in jax.tree.leaves(su.abstract.params, is_leaf=lambda v: isinstance(v, nnx.Variable))} \
        == {lora.LoRAParam}
    n_lora = sum(x.size for x in jax.tree.leaves(su.abstract.params))
    assert n_lora == 2 * (train_toy.DIN + train_toy.HIDDEN) + 2 * (train_toy.HIDDEN + train_toy.DOUT)
    state = su.init_state(0)
    frozen0 = [np.asarray(a) for a in jax.tree.leaves(jax.device_get(state.frozen))]
    params0 = [np.asarray(a) for a in jax.tree.leaves(jax.device_get(state.params))]
    obj = su.objective
    for i in range(4):
        state, m = su.step(state, su.global_batch(obj.make_batch(i, 8)))
    for a, b in zip(jax.tree.leaves(jax.device_get(state.frozen)), frozen0):
        np.testing.assert_array_equal(np.asarray(a), b)
    moved = [np.abs(np.asarray(a) - b).max() for a, b in zip(jax.tree.leaves(jax.device_get(state.params)), params0)]
    assert max(moved) > 1e-4

    # export: merged model == adapted model
    model = nnx.merge(su.graphdef, state.params, state.frozen)
    x = jnp.asarray(obj.make_batch(9, 8)["x"])
    y = model(x)
    np.testing.assert_allclose(lora.merge_lora(model)(x), y, rtol=1e-5, atol=1e-6)


def test_lora_init_from_full_run_loads_backbone(tmp_path):
    from omnijax.train import checkpoint as ckpt_lib
    full = train_toy.toy_config(steps=4)
    assert trainer.train(full, str(tmp_path / "full")) == trainer.OK
    su_full = trainer.setup(full)
    ck = ckpt_lib.Checkpointer(tmp_path / "full" / "checkpoints")
    ema = ck.restore(4, su_full.target.as_dict())["ema"]
    ck.close()

    cfg = train_toy.toy_config(steps=1)
    cfg.lora.rank = 2
    cfg.init_from = str(tmp_path / "full")
    assert trainer.train(cfg, str(tmp_path / "lora")) == trainer.OK
    su = trainer.setup(cfg)
    ck = ckpt_lib.Checkpointer(tmp_path / "lora" / "checkpoints")
    s = ck.restore(1, su.target.as_dict())
    ck.close()
    for layer in ("up", "down"):
        for name in ("kernel", "bias"):
            np.testing.assert_array_equal(np.asarray(s["frozen"][layer]["base"][name][...]),
                                          np.asarray(ema[layer][name][...]))
