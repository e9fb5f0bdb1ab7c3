"""The jitted train step: sharded == single device, guard, accumulation, EMA, the loop."""

import json

import jax
import numpy as np
import pytest

import train_toy
from omnijax.train import trainer


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def _run(cfg, mesh_shape, batches, devices=None, seed=0):
    cfg = cfg.copy_and_resolve_references()
    cfg.mesh.shape = mesh_shape
    su = trainer.setup(cfg, devices=devices)
    state = su.init_state(seed)
    losses = []
    for b in batches:
        state, m = su.step(state, su.global_batch(b))
        losses.append(float(m["loss"]))
    return su, state, losses


def _toy_batches(cfg, n, start=0):
    obj = train_toy.ToyObjective(cfg)
    return [obj.make_batch(start + i, int(cfg.train.batch_size)) for i in range(n)]


def test_sharded_step_equals_single_device_step():
    cfg = train_toy.toy_config()
    batches = _toy_batches(cfg, 3)
    one, s1, l1 = _run(cfg, dict(data=1, fsdp=1, context=1, tensor=1), batches,
                       devices=jax.devices()[:1])
    many, s8, l8 = _run(cfg, dict(data=1, fsdp=4, context=1, tensor=2), batches)
    # the layout really is sharded: the up-projection kernel is split over fsdp x tensor
    kernel = s8.params["up"]["kernel"][...]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    assert len({d.id for d in kernel.sharding.device_set}) == 8
    np.testing.assert_allclose(l8, l1, rtol=1e-5, atol=1e-6)
    for a, b in zip(_leaves(s8.params), _leaves(s1.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for a, b in zip(_leaves(s8.ema), _leaves(s1.ema)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # and training moved the params (equality is not trivially "nothing happened")
    _, s0, _ = _run(cfg, dict(data=1, fsdp=1, context=1, tensor=1), [], devices=jax.devices()[:1])
    assert max(np.abs(a - b).max() for a, b in zip(_leaves(s1.params), _leaves(s0.params))) > 1e-4


def test_gradient_accumulation_equals_full_batch():
    cfg = train_toy.toy_config()
    cfg.data.noise = 0.0          # microbatches draw their own rng; without noise they agree
    batches = _toy_batches(cfg, 2)
    _, s1, l1 = _run(cfg, dict(fsdp=4, tensor=2), batches)
    cfg.train.microbatches = 2
    _, s2, l2 = _run(cfg, dict(fsdp=4, tensor=2), batches)
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    for a, b in zip(_leaves(s2.params), _leaves(s1.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_nonfinite_batch_skips_update_and_counts():
    cfg = train_toy.toy_config()
    su = trainer.setup(cfg)
    good, bad_b = _toy_batches(cfg, 2)
    bad_b = dict(bad_b, x=np.full_like(bad_b["x"], np.nan))
    state, _ = su.step(su.init_state(0), su.global_batch(good))
    before = _leaves(state.params), _leaves(state.opt_state), _leaves(state.ema)
    state, m = su.step(state, su.global_batch(bad_b))
    assert not bool(m["finite"]) and int(m["bad_steps"]) == 1 and int(m["skipped"]) == 1
    after = _leaves(state.params), _leaves(state.opt_state), _leaves(state.ema)
    for xs, ys in zip(before, after):
        for x, y in zip(xs, ys):
            if x.dtype.kind == "f":
                np.testing.assert_array_equal(x, y)
    assert int(state.step) == 2                       # the attempt is counted
    state, m = su.step(state, su.global_batch(good))
    assert bool(m["finite"]) and int(m["bad_steps"]) == 0 and int(m["skipped"]) == 1


def test_ema_and_schedule():
    cfg = train_toy.toy_config()
    cfg.optim.ema_decay = 0.5
    su = trainer.setup(cfg)
    s0 = su.init_state(0)
    p0 = _leaves(s0.params)
    (b,) = _toy_batches(cfg, 1)
    s1, m = su.step(s0, su.global_batch(b))           # (the state argument is donated)
    assert float(m["lr"]) == pytest.approx(0.0)       # warmup starts at 0 ...
    p1, e1 = _leaves(s1.params), _leaves(s1.ema)
    s2, m = su.step(s1, su.global_batch(b))
    assert float(m["lr"]) == pytest.approx(cfg.optim.lr / cfg.optim.warmup_steps)
    # step 1 had lr 0: params unchanged, EMA = params
    for a, b_ in zip(p1, p0):
        np.testing.assert_allclose(a, b_, atol=1e-7)
    # step 2 (one update before it): ema = d * ema + (1 - d) * params, d = min(0.5, 2 / 11)
    d = min(0.5, 2 / 11)
    assert float(m["ema_decay"]) == pytest.approx(d)
    for e, p, e_prev in zip(_leaves(s2.ema), _leaves(s2.params), e1):
        np.testing.assert_allclose(e, d * e_prev + (1 - d) * p, rtol=1e-6, atol=1e-7)
    assert float(trainer.ema_decay_at(10**6, 0.5)) == 0.5        # the cap


@pytest.mark.parametrize("warmup", [True, False])
def test_ema_follows_a_short_run_with_warmup(warmup):
    """50 steps at decay 0.999: with warmup the EMA is within 25% of the distance the
    params travelled from the init; without it, it is still mostly the init (> 90%)."""
    cfg = train_toy.toy_config()
    cfg.optim.update(ema_decay=0.999, ema_warmup=warmup, decay_steps=50)
    su = trainer.setup(cfg)
    state = su.init_state(0)
    p0 = _leaves(state.params)
    for b in _toy_batches(cfg, 50):
        state, _ = su.step(state, su.global_batch(b))
    p, e = _leaves(state.params), _leaves(state.ema)
    travelled = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(p, p0)))
    gap = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(e, p)))
    assert travelled > 0.1
    if warmup:
        assert gap < 0.25 * travelled, (gap, travelled)
    else:
        assert gap > 0.9 * travelled, (gap, travelled)


def test_recipe_is_recorded_in_every_checkpoint(tmp_path):
    cfg = train_toy.toy_config(steps=4)
    status = trainer.train(cfg, str(tmp_path), objective=_RecipeToy(cfg))
    assert status == trainer.OK
    from omnijax.train import checkpoint as ckpt_lib
    ck = ckpt_lib.Checkpointer(tmp_path / "checkpoints")
    for step in ck.all_steps():
        assert ck.restore_config(step)["recipe"] == {"flow_shift": 2.5, "latent_frames": 5}
    ck.close()
    assert json.loads((tmp_path / "config.json").read_text())["recipe"]["flow_shift"] == 2.5


class _RecipeToy(train_toy.ToyObjective):
    def recipe(self):
        return {"flow_shift": 2.5, "latent_frames": 5}


def test_loop_guard_stops_with_last_good_checkpoint(tmp_path):
    cfg = train_toy.toy_config(steps=12, max_bad_steps=3)
    cfg.data.inject_nan_at = (4, 5, 6)       # batches 4..6 feed steps 5..7
    status = trainer.train(cfg, str(tmp_path))
    assert status == trainer.NONFINITE
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 8))
    assert [r["skipped"] for r in rows] == [0, 0, 0, 0, 1, 2, 3]
    # checkpoints 2 and 4 only: none was written inside the streak (6 would be)
    from omnijax.train import checkpoint as ckpt_lib
    ck = ckpt_lib.Checkpointer(tmp_path / "checkpoints")
    assert ck.all_steps() == [2, 4]
    ck.close()
    # resuming retries from the last good state and trains past the (now clean) batches
    cfg.data.inject_nan_at = ()
    assert trainer.train(cfg, str(tmp_path)) == trainer.OK
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 12 and rows[-1]["skipped"] == 0


def test_loop_isolated_nan_is_skipped_and_run_finishes(tmp_path):
    cfg = train_toy.toy_config(steps=6)
    cfg.data.inject_nan_at = (2,)
    assert trainer.train(cfg, str(tmp_path)) == trainer.OK
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["finite"] for r in rows] == [1, 1, 0, 1, 1, 1]
    assert rows[-1]["skipped"] == 1
    for key in ("loss", "grad_norm", "lr", "steps_per_s", "tokens_per_s", "mfu"):
        assert np.isfinite(rows[-1][key])
    assert list((tmp_path / "tensorboard").iterdir())


@pytest.mark.slow
def test_mmdit_sharded_step_equals_single_device_step():
    """The real model: tiny MMDiT (1 block), fsdp=4 x tensor=2 vs one device, two steps."""
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
    import omnihuman
    cfg = omnihuman.get_config("size=tiny,stage=3,depth=1")
    cfg.data.update(latent_height=4, latent_width=4, text_len=8)
    cfg.train.update(batch_size=8, compute_dtype="float32")
    cfg.objective_opts.motion_prob = 1.0          # clean motion prefix + noisy frames
    cfg.observe.peak_flops = 1.0
    cfg.optim.warmup_steps = 1
    from omnijax.models import partitioning
    from omnijax.train import objectives
    data = objectives.build(cfg).make_data(cfg, partitioning.make_mesh({"fsdp": 1}, jax.devices()[:1]))
    batches = [next(data) for _ in range(2)]
    _, s1, l1 = _run(cfg, dict(data=1, fsdp=1, context=1, tensor=1), batches, devices=jax.devices()[:1])
    _, s8, l8 = _run(cfg, dict(data=1, fsdp=4, context=1, tensor=2), batches)
    q = s8.params["blocks"]["visual"]["q"]["kernel"][...]
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")  # (layers, embed, heads)
    np.testing.assert_allclose(l8, l1, rtol=2e-5)
    for a, b in zip(_leaves(s8.params), _leaves(s1.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_time_budget_ends_a_run_with_a_checkpoint_and_a_rerun_continues(tmp_path):
    """train.max_minutes: the run stops at its budget with status OK and a checkpoint of
    the step it reached (no non-finite streak inside); the same command resumes there."""
    cfg = train_toy.toy_config(steps=10_000, log_every=5)
    cfg.data.delay_s = 0.05
    cfg.train.max_minutes = 0.03                 # ~1.8 s: well short of 10k steps
    assert trainer.train(cfg, str(tmp_path)) == trainer.OK
    from omnijax.train import checkpoint as ckpt_lib
    ck = ckpt_lib.Checkpointer(tmp_path / "checkpoints")
    reached = ck.latest_step()
    ck.close()
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert 0 < reached < 10_000 and rows[-1]["step"] == reached
    assert trainer.train(cfg, str(tmp_path)) == trainer.OK      # resumes, another budget
    ck = ckpt_lib.Checkpointer(tmp_path / "checkpoints")
    assert ck.latest_step() > reached
    ck.close()
