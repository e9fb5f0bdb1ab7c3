"""Checkpoints: every item round-trips, restores onto a different mesh, init_from loads
params + EMA only."""

import json

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

import train_toy
from omnijax.train import checkpoint as ckpt_lib
from omnijax.train import trainer


def _np(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def _train(tmp_path, steps=4, mesh=None, **data):
    cfg = train_toy.toy_config(steps=steps)
    if mesh:
        cfg.mesh.shape = mesh
    cfg.data.update(data)
    assert trainer.train(cfg, str(tmp_path)) == trainer.OK
    return cfg


def test_items_round_trip_and_restore_on_other_meshes(tmp_path):
    cfg = _train(tmp_path, mesh=dict(data=1, fsdp=8, context=1, tensor=1))
    ck = ckpt_lib.Checkpointer(tmp_path / "checkpoints")
    assert ck.all_steps() == [2, 4]
    assert ck.restore_config()["train"]["steps"] == 4

    restored = {}
    for name, shape in {"fsdp8": dict(fsdp=8), "fsdp4_tp2": dict(fsdp=4, tensor=2),
                        "one": dict(fsdp=1)}.items():
        c = cfg.copy_and_resolve_references()
        c.mesh.shape = {"data": 1, "fsdp": 1, "context": 1, "tensor": 1, **shape}
        su = trainer.setup(c, devices=jax.devices()[:1] if name == "one" else None)
        data = su.objective.make_data(c, su.mesh)
        state = ck.restore(4, su.target.as_dict(), data)
        kernel = state["params"]["up"]["kernel"][...]
        if name == "fsdp4_tp2":
            assert kernel.sharding.spec == P("fsdp", "tensor")
        assert kernel.sharding == su.shardings.params["up"]["kernel"].get_raw_value()
        assert int(state["step"]) == 4
        # the data iterator continues at batch 4
        np.testing.assert_array_equal(next(data)["x"], su.objective.make_batch(4, 8)["x"])
        restored[name] = state
    ck.close()
    for other in ("fsdp4_tp2", "one"):
        for key in ("params", "ema", "opt_state", "rng"):
            for a, b in zip(_np(restored[other][key]), _np(restored["fsdp8"][key])):
                np.testing.assert_array_equal(a, b)

    # and the restored state trains on: one more step equals the original run's step 5
    c = cfg.copy_and_resolve_references()
    c.mesh.shape = dict(data=1, fsdp=4, context=1, tensor=2)
    c.train.steps = 5
    assert trainer.train(c, str(tmp_path)) == trainer.OK
    ref = tmp_path / "ref"
    _train(ref, steps=5, mesh=dict(data=1, fsdp=8, context=1, tensor=1))
    last = lambda d: json.loads((d / "metrics.jsonl").read_text().splitlines()[-1])["loss"]
    np.testing.assert_allclose(last(tmp_path), last(ref), rtol=1e-5)


def test_init_from_loads_params_and_ema_only(tmp_path):
    _train(tmp_path / "stage1", steps=4)
    ck = ckpt_lib.Checkpointer(tmp_path / "stage1" / "checkpoints")
    cfg = train_toy.toy_config(steps=1)
    su = trainer.setup(cfg)
    s1 = ck.restore(4, su.target.as_dict())
    ck.close()
    p1, e1 = _np(s1["params"]), _np(s1["ema"])

    sub = ckpt_lib.restore_subset(tmp_path / "stage1",
                                  {"params": su.target.params, "ema": su.target.ema})
    for a, b in zip(_np(sub["params"]), p1):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_np(sub["ema"]), e1):
        np.testing.assert_array_equal(a, b)

    # through the loop: stage 2 starts at step 0 with stage 1's weights and a fresh
    # optimizer. Its first step runs at lr 0 (warmup), so after it params == stage 1's.
    cfg.init_from = str(tmp_path / "stage1")
    assert trainer.train(cfg, str(tmp_path / "stage2")) == trainer.OK
    ck2 = ckpt_lib.Checkpointer(tmp_path / "stage2" / "checkpoints")
    s2 = ck2.restore(ck2.latest_step(), su.target.as_dict())
    ck2.close()
    assert int(s2["step"]) == 1
    for a, b in zip(_np(s2["params"]), p1):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)
    counts = [int(x) for x in _np(s2["opt_state"]) if x.dtype.kind == "i"]
    assert counts and all(c == 1 for c in counts)     # fresh Adam moments/count


def test_remote_style_paths_stay_untouched():
    assert str(ckpt_lib.as_path("gs://bucket/run")) == "gs://bucket/run"
    assert str(ckpt_lib.as_path("relative/run")).startswith("/")
