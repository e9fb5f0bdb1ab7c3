"""`omnijax demo`: the bundled model still talks in sync with held-out speech; the
from-scratch path runs at toy sizes and resumes; bad arguments are one line."""

import json
import os
import subprocess
import sys

import pytest
from data_helpers import USER_ENV

from omnijax import demo

ENV = USER_ENV
FILES = ("video.mp4", "frames.png", "eval.json", "curves.png")


def _demo(*args, timeout=1500):
    return subprocess.run([sys.executable, "-m", "omnijax.cli", "demo", *args, "--quiet"],
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def _check_outputs(out):
    import av
    for name in FILES:
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    with av.open(os.path.join(out, "video.mp4")) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
    blob = json.load(open(os.path.join(out, "eval.json")))
    for key in ("model", "truth", "vae", "vae_streamed", "still", "mismatched", "no_audio"):
        assert set(blob["lipsync"][key]) >= {"peak", "offset", "confidence"}, key
    assert set(blob["pose_error_px"]) >= {"model", "no_pose", "truth"}
    assert len(blob["identity_drift"]["per_segment"]) == blob["identity_drift"]["segments"]
    assert "seam_ratio" in blob and "fd_proxy" in blob and "meta" in blob
    return blob


def test_bad_arguments_are_one_line(tmp_path):
    for args, needle in ((["--minutes", "5"], "--minutes"),
                         (["--train", "--model", str(tmp_path)], "--model"),
                         (["--model", str(tmp_path)], "not an exported model")):
        p = _demo(*args, "--out", str(tmp_path / "o"), timeout=120)
        lines = [line for line in p.stderr.splitlines() if line.strip()]
        assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, p.stderr)
        assert not (tmp_path / "o").exists()
    (tmp_path / "file").write_text("x")
    p = _demo("--quick", "--out", str(tmp_path / "file"), timeout=120)
    assert p.returncode == 2 and "is a file" in p.stderr


def test_a_resumed_phase_gets_what_is_left_of_its_share(tmp_path):
    """Time already spent is read back from metrics.jsonl: 10 steps at 2/s + 20 at 4/s, then
    a resumed attempt repeating step 20 (that interval is not known) and going on at 1/s."""
    rows = [(10, 2.0), (20, 4.0), (30, 4.0), (20, 9.0), (30, 1.0)]
    lines = [json.dumps({"step": s, "steps_per_s": r, "loss": 0.1}) for s, r in rows]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4')   # cut short
    assert demo.minutes_trained(str(tmp_path)) == pytest.approx((10 / 2 + 10 / 4 + 10 / 4 + 10 / 1) / 60)
    assert demo.minutes_trained(str(tmp_path / "none")) == 0.0


def test_the_recipes_batch_of_2_trains_on_a_host_of_8_devices(tmp_path):
    import jax

    from omnijax.train import trainer
    assert jax.device_count() == 8                       # (conftest's XLA_FLAGS)
    cfg = demo.config_module("vae").get_config("size=tiny,frames=5,res=16")
    cfg.train.update(steps=2, batch_size=2)
    demo.fit_devices(cfg)
    assert cfg.mesh.devices == 2
    assert trainer.train(cfg, str(tmp_path / "vae")) == trainer.OK
    cfg.train.batch_size = 8
    cfg.mesh.devices = 0
    demo.fit_devices(cfg)
    assert cfg.mesh.devices == 0                          # 8 splits: every device


def test_a_timed_phase_ends_with_a_linear_cooldown_that_a_rerun_keeps(tmp_path):
    """demo._cooled: the main part at a constant rate (here it stops at its share of the step
    cap, 16 of 20), then the rate falls linearly to final_lr_ratio over 16 x 0.2 / 0.8 = 4
    more steps; a rerun of the finished phase trains nothing more."""
    cfg = demo.config_module("vae").get_config("size=tiny,frames=1,res=16")
    cfg.train.update(steps=20, batch_size=2, log_every=1)
    cfg.optim.update(lr=1e-3, warmup_steps=0, schedule="wsd", decay_steps=20, cooldown_steps=0,
                     final_lr_ratio=0.1)
    cfg.checkpoint.every = 100
    workdir = str(tmp_path / "vae")
    info = demo._cooled(cfg, workdir, minutes=30.0, cooldown=0.2)
    assert info["steps"] == 20 and info["cooldown_from"] == 16
    assert json.load(open(os.path.join(workdir, "cooldown.json"))) == {"from": 16, "steps": 4}
    lr = {r["step"]: r["lr"] for r in map(json.loads, open(os.path.join(workdir, "metrics.jsonl")))}
    # the row of step s logs the rate of its update, the schedule at s - 1 (optax counts from 0)
    assert [lr[s] for s in range(1, 18)] == pytest.approx([1e-3] * 17)
    assert [lr[s] for s in (18, 19, 20)] == pytest.approx([1e-3 - k * 0.9e-3 / 4 for k in (1, 2, 3)], rel=1e-5)
    again = demo._cooled(cfg, workdir, minutes=30.0, cooldown=0.2)
    assert again["steps"] == 20
    assert len(open(os.path.join(workdir, "metrics.jsonl")).readlines()) == 20
    with pytest.raises(ValueError, match="cooldown=1.0"):
        demo._cooled(cfg, workdir, minutes=30.0, cooldown=1.0)


def test_the_bundled_model_is_an_export_of_this_code():
    """The bundled weights load with today's model code (re-export them when the format changes)."""
    from omnijax.sample.bundle import load_bundle
    b = load_bundle(demo.BUNDLED)
    assert b.meta["kind"] == "mmdit" and b.meta["video"]["frames_per_segment"] == 17
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(demo.BUNDLED) for f in fs)
    assert size <= 20 * 2**20, size
    for name in ("eval.json", "curves"):
        assert os.path.exists(os.path.join(demo.BUNDLED, name)), name


@pytest.mark.slow
def test_bundled_demo_talks_in_sync(tmp_path):
    """The README's first command: files written, and the bundled model's lip-sync on the
    held-out clip follows the speech (a later change to the model code cannot silently
    break the bundled weights): at least 3x what the same model reaches with the pose and no
    speech (`no_audio`: 0.09 against 0.91 when bundled; the pose guider does not see the
    mouth) and with another clip's speech (`mismatched`: 0.17)."""
    p = _demo("--out", str(tmp_path / "d"))
    assert p.returncode == 0, p.stderr[-3000:]
    blob = _check_outputs(tmp_path / "d")
    ls = blob["lipsync"]
    assert ls["model"]["peak"] >= 3 * max(ls["mismatched"]["peak"], ls["no_audio"]["peak"], 0.02), ls
    assert "lip-sync" in p.stdout and "pose" in p.stdout


@pytest.mark.slow
def test_quick_demo_from_scratch_and_resume(tmp_path):
    out = str(tmp_path / "q")
    p = _demo("--quick", "--out", out)
    assert p.returncode == 0, p.stderr[-3000:]
    _check_outputs(out)
    phases = json.load(open(os.path.join(out, "phases.json")))
    assert set(phases) >= {"synth", "vae", "preprocess", "stage1", "stage2", "stage3", "export", "video",
                           "video_s2", "eval"}
    for model in ("s2", "s3"):
        assert os.path.exists(os.path.join(out, "models", model, "export.json"))
    blob = json.load(open(os.path.join(out, "eval.json")))
    assert set(blob["models"]) == {"s3", "s2"}
    again = subprocess.run([sys.executable, "-m", "omnijax.cli", "demo", "--quick", "--out", out],
                           capture_output=True, text=True, env=ENV, timeout=600)
    assert again.returncode == 0 and again.stdout.count("done earlier") == len(phases), again.stdout
