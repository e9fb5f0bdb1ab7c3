"""`omnijax eval`: one-line errors, and (slow) a real trained tiny model (the bundled demo
model) evaluated on held-out SynthTalk clips: the schema and the references in order."""

import json
import os
import subprocess
import sys

import pytest
from data_helpers import USER_ENV

from omnijax import demo

ENV = USER_ENV


def _eval(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "omnijax.cli", "eval", *args, "--quiet"],
                          capture_output=True, text=True, env=ENV, timeout=timeout)


def test_bad_inputs_are_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    out = str(tmp_path / "o")
    for args, needle in ((["--model", str(tmp_path), "--data", str(tmp_path), "--out", out], "not an exported model"),
                         (["--model", demo.BUNDLED, "--data", str(tmp_path / "empty"), "--out", out],
                          "not a SynthTalk folder"),
                         (["--model", demo.BUNDLED, "--data", str(tmp_path / "nope"), "--out", out], "--data"),
                         (["--model", demo.BUNDLED, "--out", out], "--data"),
                         (["--real", "--video", str(tmp_path / "v.mp4"), "--audio", "a.wav", "--ref", "r.png",
                           "--out", out], "--video")):
        p = _eval(*args, timeout=120)
        lines = [line for line in p.stderr.splitlines() if line.strip()]
        assert p.returncode == 2 and len(lines) == 1 and needle in lines[0], (args, p.stderr)
        assert not os.path.exists(out)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    from omnijax.data import synthetic as st
    root = tmp_path_factory.mktemp("heldout")
    c = demo.load_recipe(False, None).synth
    st.generate(st.SynthConfig(clips=3, seed=2000, seconds=3.0, size=c.size, framing=c.framing,
                               mouth_scale=c.mouth_scale, out_of_sync=0, occluded=0, missing=0),
                str(root / "synth"), progress=False)
    return str(root / "synth")


@pytest.mark.slow
def test_eval_a_trained_model_schema_and_reference_order(heldout, tmp_path):
    out = str(tmp_path / "eval")
    p = _eval("--model", demo.BUNDLED, "--model", demo.BUNDLED, "--data", heldout, "--clips", "1",
              "--seconds", "3", "--steps", "8", "--out", out)
    assert p.returncode == 0, p.stderr[-3000:]
    blob = json.load(open(os.path.join(out, "eval.json")))
    ls = blob["lipsync"]
    for key in ("model", "truth", "vae", "still", "mismatched", "no_audio"):
        assert set(ls[key]) >= {"peak", "offset", "confidence"}, key
    assert ls["truth"]["peak"] > ls["vae"]["peak"] > ls["still"]["peak"]
    assert set(blob["pose_error_px"]) >= {"model", "no_pose", "truth"}
    assert blob["identity_drift"]["per_segment"] and blob["identity_drift"]["other_identity"] > 0
    assert "seam_ratio" in blob and "fd_proxy" in blob
    assert blob["meta"]["clips"] == ["clip_000000"] and len(blob["models"]) == 2   # --model twice
    for name in ("frames.png", "drift.png", "curves.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0
    assert "lip-sync model" in p.stdout
